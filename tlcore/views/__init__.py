"""What the pages show, without streamlit: choices, labels, figures and tables."""
