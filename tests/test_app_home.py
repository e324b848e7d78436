"""AppTest test of the landing page: it renders and links to every page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_landing_page_links_every_page() -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Transfer learning on images"
    links = [el.proto for el in at.get("page_link")]
    assert [link.label for link in links] == ["**Train**", "**Compare**", "**Predict**", "**Report**"]
    assert "Quick start" in [h.value for h in at.subheader]
