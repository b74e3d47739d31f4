import streamlit as st

from comet.ui.chrome import page_setup

conn = page_setup()
st.title("History")
st.caption("Every prediction made from this dashboard.")
