"""The ASGI entry point ``vidlm serve`` runs: the Streamlit app plus the video media route.

Run with ``streamlit run app/ui_server.py``; Streamlit finds ``app`` (an ``st.App``) here.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.ui_media import media_routes

app = st.App(str(Path(__file__).with_name("streamlit_app.py")), routes=media_routes())
