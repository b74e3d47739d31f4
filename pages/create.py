import streamlit as st

from comet.ui.chrome import page_setup

conn = page_setup()
st.title("Create")
st.caption("Generate images with the FLUX models through CometAPI.")
