"""The vidlm web app: Library, Watch & ask, Search, Export (``vidlm serve`` / ``vidlm demo``).

The backend (model + library) is chosen by environment variables (see ``app.ui_backend``)
and loaded once per server; the pages only call it. Run it with ``vidlm serve``, which also
mounts the video route (``app.ui_server``); plain ``streamlit run app/streamlit_app.py``
works too, with videos read through Streamlit's media store.
"""

from __future__ import annotations

import streamlit as st

from app.ui_common import get_backend, show_error
from app.ui_pages import all_pages


def sidebar() -> None:
    """What the app is looking at."""
    with st.sidebar:
        try:
            st.caption(get_backend().describe())
        except Exception as err:  # noqa: BLE001 - shown on the page, never a traceback
            show_error(err)


def main() -> None:
    """Page config, navigation, run the chosen page."""
    st.set_page_config(page_title="vidlm", page_icon=":material/movie:", layout="wide")
    navigation = st.navigation(all_pages())
    sidebar()
    navigation.run()


main()
