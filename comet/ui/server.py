"""What the server does once, at start: bring up the tracker, so predictions left unfinished by a
crash or a restart are followed (and their images saved before the upstream files expire) even
when nobody opens the app (without this the tracker would start with the first page view); and
at a clean shutdown: stop it.

`streamlit run streamlit_app.py` finds the `st.App` that streamlit_app.py builds with this
lifespan (see there); page runs build the same cached objects and so find the running tracker.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import streamlit as st

from comet.config import Settings
from comet.ui.context import read_secrets, shared_connection, stop_batch_runners

log = logging.getLogger("comet.server")


@asynccontextmanager
async def lifespan(app):
    try:
        shared_connection(Settings.from_sources(read_secrets()))
    except Exception:  # a bad setting or an unreachable database: the pages say so, with details
        log.warning("the tracker did not start with the server; it starts with the first page view",
                    exc_info=True)
    yield
    # A clean shutdown (a redeploy, Ctrl-C): the batch runner first ends its creates in flight
    # while the database is still open (no cell left uncertain); then the tracker stops, handing
    # its leases to the other replicas at once rather than when they run out, and the database
    # pool closes.
    stop_batch_runners()
    st.cache_resource.clear()
