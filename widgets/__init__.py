"""Streamlit code the pages share (tlcore never imports streamlit): navigation, run pickers, run cards."""
