"""Entry point: page config and navigation only. Each page starts with `page_setup()`, which
draws what every page shares (connection badge, demo notice).

`streamlit run` imports this file once to find `app` (an `st.App`, whose lifespan starts the
tracker with the server), then runs it as `__main__` for every page view."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

if __name__ == "__main__":  # a page view (`streamlit run`, AppTest)
    from comet.ui.access import require_access

    st.set_page_config(page_title="Comet FLUX Studio", page_icon=":material/palette:", layout="wide")
    require_access()  # a sign-in screen, when the secrets ask for one, before any page
    st.navigation(
        [
            st.Page(PAGES / "create.py", title="Create", icon=":material/brush:", default=True),
            st.Page(PAGES / "history.py", title="History", icon=":material/history:", url_path="history"),
        ]
    ).run()
else:  # imported by `streamlit run` to serve the app
    from comet.ui.server import lifespan

    app = st.App(Path(__file__).name, lifespan=lifespan)
