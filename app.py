"""tlcore's web app: the entry point (`streamlit run app.py`), its navigation and landing page."""

import streamlit as st

from tlcore.data.sources import BUILTIN
from tlcore.paths import runs_root
from tlcore.views import warmup
from widgets import nav


def home() -> None:
    """What the tool does, where to go, and a quick start."""
    st.title("Transfer learning on images")
    st.markdown(
        "Take a network trained on ImageNet and teach it **your own classes**: pick a backbone, a dataset "
        "and a freeze strategy, watch the loss and accuracy curves grow, compare strategies side by side, "
        "and get top-k predictions for your photos. Everything runs on this machine; "
        "**EfficientNet-Lite0** on the built-in **digits** data works offline out of the box."
    )
    # Cards of a fixed width in a wrapping row: four a row on a wide screen, two on a laptop
    # (four columns at 1000 px cut "Compare" to "Compar").
    cards = st.container(horizontal=True, key="home_cards")
    for page, what in (
        (TRAIN, "Pick a backbone, a dataset and a strategy; runs train in the background with live curves."),
        (COMPARE, "Overlay the validation curves of any runs; summary and epoch tables as CSV."),
        (PREDICT, "Upload images and see the top-k classes of an ImageNet backbone or of your own run."),
        (REPORT, "See which classes a run confuses and the images it gets most wrong; test it on new images."),
    ):
        with cards.container(border=True, width=214, height="stretch"):
            st.page_link(page, label=f"**{page.title}**")
            st.caption(what)
    st.subheader("Quick start")
    st.markdown(f"""
1. Open **Train**, keep the defaults (efficientnet_lite0, digits, feature_extraction), set
   *Images per class* to 20 for a short run, and press **Start training**.
2. Start a second run with another strategy (say `finetune`, which trains every layer: set
   *Image size* to 64 to keep it short). It waits in the queue while the first one trains, and
   each run shows its progress and curves.
3. Open **Compare** to see both runs' validation accuracy and loss per epoch, then download the tables.
4. Open **Predict**, upload a photo, and compare your run's classes with the backbone's ImageNet guesses.

Datasets: the built-in ones ({", ".join(BUILTIN)}; all but digits download once), a folder on this
machine with one sub-folder of images per class, or a `.zip` of such folders (up to 1 GiB).
Runs are saved in `{runs_root().resolve()}` (set `TLCORE_RUNS` to move them): a reload, a second
tab or a restart of the app finds them again.
""")


TRAIN = st.Page("pages/1_Train.py", title="Train", icon=":material/model_training:")
COMPARE = st.Page("pages/2_Compare.py", title="Compare", icon=":material/stacked_line_chart:")
PREDICT = st.Page("pages/3_Predict.py", title="Predict", icon=":material/image_search:")
REPORT = st.Page("pages/4_Report.py", title="Report", icon=":material/grid_on:")
st.set_page_config(page_title="tlcore · transfer learning", page_icon=":material/school:", layout="wide")
# URL paths are left to Streamlit (/Train, /Compare, /Predict, from the file names): a fresh
# server's first request resolves pages/ by those names before this script has run, so a
# custom path there showed a "Page not found" dialog on a direct link.
nav.mark_app_ran()
# Once per server process: the pages' imports and the run index load in the background while the
# visitor reads this page (tlcore/views/warmup.py), so the first visit of a page does not wait for them.
warmup.start(runs_root())
page = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True), TRAIN, COMPARE, PREDICT, REPORT])
if wanted := nav.page_wanted():  # a direct visit that Streamlit first ran without this script (see widgets/nav.py)
    st.switch_page(wanted)
page.run()
