"""The app's pages (one ``st.Page`` per page function), shared by navigation and page links."""

from __future__ import annotations

import streamlit as st

from app.ui_common import guarded
from app.ui_export import export_page
from app.ui_library import library_page
from app.ui_search import search_page
from app.ui_watch import watch_page

_PAGES = {
    "library": (library_page, "Library", ":material/video_library:"),
    "watch": (watch_page, "Watch & ask", ":material/smart_display:"),
    "search": (search_page, "Search", ":material/search:"),
    "export": (export_page, "Export", ":material/download:"),
}


def page(name: str) -> st.Page:
    """The ``st.Page`` called ``name`` ("library", "watch", "search", "export")."""
    func, title, icon = _PAGES[name]
    return st.Page(guarded(func), title=title, icon=icon, url_path=name, default=name == "library")


def all_pages() -> list[st.Page]:
    """Every page, in menu order."""
    return [page(name) for name in _PAGES]
