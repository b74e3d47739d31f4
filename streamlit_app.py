"""Entry point: page config and navigation only. Each page starts with `page_setup()`, which
draws what every page shares (connection badge, demo notice).

`streamlit run` imports this file once to find `app` (an `st.App`, whose lifespan starts the
tracker with the server, with the password sign-in's two routes beside the pages), then runs it
as `__main__` for every page view."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

if __name__ == "__main__":  # a page view (`streamlit run`, AppTest)
    from comet.ui.access import require_access, signed_in

    # An emoji favicon is drawn by the browser itself; a :material/ one is fetched from Google's
    # font server on every load (and fails without internet).
    st.set_page_config(page_title="Comet FLUX Studio", page_icon="🎨", layout="wide")
    # Navigation comes before the sign-in screen so the page asked for (and its ?query) stays the
    # one the browser shows and signing in lands on; hidden until then, so the sign-in screen lists
    # no pages (without st.navigation Streamlit would list the files of pages/).
    page = st.navigation(
        [
            st.Page(PAGES / "create.py", title="Create", icon=":material/brush:", default=True),
            st.Page(PAGES / "history.py", title="History", icon=":material/history:", url_path="history"),
            st.Page(PAGES / "batch.py", title="Batch", icon=":material/grid_view:", url_path="batch"),
            st.Page(PAGES / "usage.py", title="Usage", icon=":material/monitoring:", url_path="usage"),
        ],
        position="sidebar" if signed_in() else "hidden",
    )
    require_access(page)  # a sign-in screen, when the secrets ask for one, before any page
    page.run()
else:  # imported by `streamlit run` to serve the app
    from comet.ui.access import routes
    from comet.ui.server import lifespan

    app = st.App(Path(__file__).name, lifespan=lifespan, routes=routes())
