"""The app's own navigation on a page's first visit, even as a fresh server's first request.

Streamlit runs a page of `pages/` directly, with its own `pages/` sidebar (an entry "app"
instead of "Home"), until `st.navigation` in app.py has run once in the server. A page that
finds itself run without app.py goes through app.py, which sends the user on to that page.
"""

from __future__ import annotations

import streamlit as st

RAN, WANTED = "_app_ran", "_page_wanted"


def mark_app_ran() -> None:
    """app.py, before `st.navigation`: this session's pages are run through the app's navigation."""
    st.session_state[RAN] = True


def page_wanted() -> str | None:
    """app.py, after `st.navigation`: the page a first visit asked for (then `st.switch_page` to it), once."""
    return st.session_state.pop(WANTED, None)


def through_app(page: str) -> None:
    """A page's first line: when run without app.py (`pages/` fallback), go through app.py to `page`."""
    if not st.session_state.get(RAN):
        st.session_state[WANTED] = page
        st.switch_page("app.py")
