"""Usage: what the team spent in a period, by day, person and model (estimates)."""

import streamlit as st

from comet.ui import usage_view
from comet.ui.chrome import page_setup

conn = page_setup()
st.title("Usage")
first, last = usage_view.period()
usage_view.report(conn.ledger, first, last)
