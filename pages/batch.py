"""Batch: many prompts, seeds, models and swept values at once, sent by the server; a contact
sheet of the results."""

import streamlit as st

from comet.store import HistoryUnavailable
from comet.ui import batch_view as view
from comet.ui.chrome import history_unavailable, page_setup

conn = page_setup()
st.title("Batch")

try:  # st.rerun / st.stop are BaseExceptions: they pass through
    if batch_id := st.query_params.get(view.BATCH_PARAM):
        view.contact_sheet(conn, batch_id)
        st.divider()
    st.subheader("New batch")
    view.new_batch(conn)
    st.divider()
    st.subheader("Recent batches")
    view.recent(conn)
except HistoryUnavailable as exc:
    history_unavailable(exc, conn.store)
