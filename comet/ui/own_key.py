""""Use my own key": a visitor pastes their CometAPI key for this browser tab only.

The key lives in st.session_state and in the memory of the tracker that polls what it created;
it is never written to the database, a file, a log or the page, and it goes to the configured
base URL only (the operator's, which visitors cannot change)."""

from __future__ import annotations

import streamlit as st

OWN_KEY = "own.key"
_TYPED = "own.typed"


def own_key() -> str | None:
    return st.session_state.get(OWN_KEY) or None


def _use() -> None:
    typed = (st.session_state.get(_TYPED) or "").strip()
    st.session_state[_TYPED] = ""  # never left in a widget that would redraw it
    if typed and not any(ch.isspace() for ch in typed) and len(typed) <= 512:
        st.session_state[OWN_KEY] = typed
    elif typed:
        st.session_state["own.problem"] = "That does not look like an API key (no spaces, at most 512 characters)."


def _forget() -> None:
    st.session_state.pop(OWN_KEY, None)


def own_key_box(base_host: str) -> None:
    """Sidebar control: paste a key for this tab, or forget it."""
    with st.expander("Use your own key", icon=":material/key:", expanded=False):
        if own_key():
            st.caption(f"Your key is in use for this tab only, with {base_host}. It is not saved anywhere.")
            st.button("Forget my key", on_click=_forget, icon=":material/key_off:", key="own.forget")
            return
        st.text_input("CometAPI key", type="password", key=_TYPED, placeholder="sk-…",
                      help=f"Sent only to {base_host}; kept in this browser tab's session, never stored.")
        st.button("Use this key", on_click=_use, icon=":material/key:", key="own.use")
        if problem := st.session_state.pop("own.problem", None):
            st.error(problem)
