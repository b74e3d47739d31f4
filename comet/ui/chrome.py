"""What every page shows around its own content: the connection badge and the demo notice."""

from __future__ import annotations

import streamlit as st

from comet.ui.access import account_box, open_to_anyone_warning, require_access
from comet.ui.context import Connection, connection
from comet.ui.safe import plain

DEMO_NOTICE = (
    "**Demo mode**: a local stand-in of CometAPI answers and synthesizes the images on this "
    "machine; nothing is sent to CometAPI. To go live, set `COMETAPI_KEY` in the app's secrets "
    "(`.streamlit/secrets.toml`, or Settings → Secrets on Community Cloud) or the environment."
)


def page_setup() -> Connection:
    """The first call of every page: badge, demo notice, and the shared connection."""
    require_access()
    conn = connection()
    with st.sidebar:
        account_box()
        if conn.demo:
            st.badge("Demo mode · local stand-in", icon=":material/science:", color="orange")
        else:
            st.badge(f"Live · {conn.label}", icon=":material/cloud_done:", color="green")
    if conn.demo:
        st.info(DEMO_NOTICE, icon=":material/science:")
    open_to_anyone_warning(has_server_key=not conn.demo)
    return conn


def problem_list(title: str, items: list[str], *, error: bool) -> None:
    """Validation problems beside the form, each as plain text."""
    body = f"**{title}**\n" + "\n".join(f"- {plain(item)}" for item in items)
    if error:
        st.error(body, icon=":material/error:")
    else:
        st.warning(body, icon=":material/info:")
