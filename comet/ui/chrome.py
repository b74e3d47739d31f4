"""What every page shows around its own content: the connection badge and the demo notice; and
the pieces pages share (problem lists, ZIP downloads)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from comet import export
from comet.client import OK, REJECTED
from comet.store import HistoryError, HistoryUnavailable, Store
from comet.ui import spend_view
from comet.ui.access import account_box, open_to_anyone_warning, require_access
from comet.ui.context import Connection, connection, settings
from comet.ui.own_key import own_key_box
from comet.ui.safe import plain

RETRY_SECONDS = 5.0
_RETRY_TICKS = "history.retry_ticks"
DEMO_NOTICE = (
    "**Demo mode**: a local stand-in of CometAPI answers and synthesizes the images on this "
    "machine; nothing is sent to CometAPI. To go live, set `COMETAPI_KEY` in the app's secrets "
    "(`.streamlit/secrets.toml`, or Settings → Secrets on Community Cloud) or the environment."
)


def page_setup() -> Connection:
    """The first call of every page: badge, demo notice, and the shared connection."""
    through_app_navigation()
    require_access()
    try:
        conn = connection()
    except HistoryUnavailable as exc:
        history_unavailable(exc)
    except HistoryError as exc:  # e.g. a PostgreSQL URL without its driver installed
        st.error(plain(exc.message), icon=":material/database:")
        st.stop()
    with st.sidebar:
        account_box()
        connection_badge(conn)
        spend_view.sidebar_left(conn)
        own_key_box(settings().base_host)
    if conn.demo:
        st.info(DEMO_NOTICE, icon=":material/science:")
    open_to_anyone_warning(has_server_key=not conn.demo)
    return conn


def connection_badge(conn: Connection) -> None:
    """The API as this connection last found it: what the latest call of its client (a page's,
    or the tracker's polls) got. Live until a call says otherwise."""
    if conn.demo:
        st.badge("Demo mode · local stand-in", icon=":material/science:", color="orange")
        return
    outcome = conn.client.last_outcome
    if outcome is None or outcome.state == OK:
        st.badge(f"Live · {conn.label}", icon=":material/cloud_done:", color="green")
    elif outcome.state == REJECTED:
        st.badge(f"Key rejected · {conn.label}", icon=":material/key_off:", color="red")
        if conn.personal:
            st.caption(f"CometAPI rejected your key {_ago(outcome.at)}: check the key you entered under "
                       "**Use your own key** (forget it, then paste it again).")
        else:
            st.caption(f"CometAPI rejected the server's key {_ago(outcome.at)}: the app's operator should "
                       "check `COMETAPI_KEY`. Meanwhile you can use your own key below.")
    else:
        st.badge(f"Unreachable · {conn.label}", icon=":material/cloud_off:", color="orange")
        st.caption(f"No answer from the API {_ago(outcome.at)}. Running predictions are checked again "
                   "by themselves.")


def _ago(moment: float) -> str:
    seconds = max(time.time() - moment, 0.0)
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    return f"{seconds // 3600:.0f} h ago"


def through_app_navigation() -> None:
    """Make sure this page runs inside streamlit_app.py's navigation.

    A fresh server process starts in Streamlit's old multipage mode because a `pages/` folder sits
    beside the entry script; only the entry script's `st.navigation` switches that off. When the
    first visitor comes straight to a page's own address (a shared deep link, a server just woken or
    redeployed), Streamlit runs this file on its own instead: no entry script (page config,
    layout), and a sidebar of file names (streamlit app / create / history) for every visitor
    until the process restarts. Switching the mode off and rerunning lets the entry script run
    and open this same page (same url path, same ?id=). The switch is process-wide, so this
    happens at most once per process, on a page load.

    AppTest turns the old mode back on before every run, where a rerun here would swallow each
    click: under AppTest the page keeps running as before."""
    from streamlit import config
    from streamlit.runtime.pages_manager import PagesManager

    if getattr(PagesManager, "uses_pages_directory", False) and not config.get_option("global.appTest"):
        PagesManager.uses_pages_directory = False
        st.rerun()


def history_unavailable(exc: HistoryUnavailable, store: Store | None = None) -> NoReturn:
    """The database cannot be reached: say so, keep checking, and come back by itself."""
    st.warning(
        "**History is unavailable, retrying…** The history database cannot be reached right now (a "
        "restart or a network problem). Running predictions are still followed and appear here once "
        "it is back; nothing is lost.",
        icon=":material/cloud_off:",
    )
    st.session_state[_RETRY_TICKS] = 0  # this run's own call of the fragment checks nothing
    st.fragment(_retry, run_every=RETRY_SECONDS)(store)
    st.stop()


def _retry(store: Store | None) -> None:
    ticks = st.session_state.get(_RETRY_TICKS, 0)
    st.session_state[_RETRY_TICKS] = ticks + 1
    if ticks and (store is None or store.available()):
        st.rerun(scope="app")
    st.caption(f"Last checked {datetime.now():%H:%M:%S} · again every {RETRY_SECONDS:g} s")


def problem_list(title: str, items: list[str], *, error: bool) -> None:
    """Validation problems beside the form, each as plain text."""
    body = f"**{title}**\n" + "\n".join(f"- {plain(item)}" for item in items)
    if error:
        st.error(body, icon=":material/error:")
    else:
        st.warning(body, icon=":material/info:")


def zip_download(where: DeltaGenerator, label: str, sizes: list[int], build: Callable[[range], bytes], *,
                 file_name: str, key: str, part_label: Callable[[range], str], help: str,
                 disabled: bool = False) -> None:
    """A ZIP of the items whose stored bytes are `sizes`, made by `build(positions)` on click.
    Streamlit builds a download in the server's memory, so past export.ZIP_PART_BYTES it becomes
    a popover of parts of whole items, each labelled by `part_label(positions)`."""
    parts = export.zip_parts(sizes) or [range(0)]
    if len(parts) == 1:
        where.download_button(label, data=lambda: build(parts[0]), file_name=f"{file_name}.zip",
                              mime="application/zip", icon=":material/folder_zip:", on_click="ignore", key=key,
                              help=help, disabled=disabled)
        return
    with where.popover(f"{label} · {len(parts)} parts", icon=":material/folder_zip:",
                       help=f"{help} Too large for one download: each part holds whole items."):
        for number, part in enumerate(parts, 1):
            st.download_button(f"Part {number} of {len(parts)} · {part_label(part)}",
                               data=lambda part=part: build(part), file_name=f"{file_name}-part{number}.zip",
                               mime="application/zip", icon=":material/download:", on_click="ignore",
                               key=f"{key}{number}")
