"""Entry point: page config and navigation only. Each page starts with `page_setup()`, which
draws what every page shares (connection badge, demo notice)."""

from pathlib import Path

import streamlit as st

from comet.ui.access import require_access

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="Comet FLUX Studio", page_icon=":material/palette:", layout="wide")
require_access()  # a sign-in screen, when the secrets ask for one, before any page
st.navigation(
    [
        st.Page(PAGES / "create.py", title="Create", icon=":material/brush:", default=True),
        st.Page(PAGES / "history.py", title="History", icon=":material/history:", url_path="history"),
    ]
).run()
