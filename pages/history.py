"""History: every prediction made from this dashboard, kept with its images."""

import streamlit as st

from comet.store import HistoryUnavailable
from comet.ui import history_view as view
from comet.ui.chrome import history_unavailable, page_setup

conn = page_setup()
view.go_to_create_if_asked()
st.title("History")

try:  # st.rerun / st.stop are BaseExceptions: they pass through
    if prediction_id := st.query_params.get(view.DETAIL_PARAM):
        view.detail(conn, prediction_id)
        st.divider()

    view.watcher(conn)
    chosen = view.filters(conn)
    # Pager, count and exports above the table (a page of rows is tall), the exports added once
    # the table has drawn: the ZIP needs its selection.
    toolbar = st.container(horizontal=True, vertical_alignment="center")
    selected = view.table(conn, chosen, toolbar)
    if view.selection_changed(selected) and len(selected) == 1:
        st.query_params[view.DETAIL_PARAM] = selected[0]
        st.rerun()
    view.exports(conn, chosen, selected, toolbar)
except HistoryUnavailable as exc:
    history_unavailable(exc, conn.store)

with st.expander("Track an existing prediction", icon=":material/add_link:"):
    st.caption("Paste the id of a prediction created elsewhere with this key (a script, a teammate) "
               "to add it to the history and keep its images.")
    view.track_form(conn, key="history.track")
