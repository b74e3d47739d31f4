"""The app's shared objects: settings, and one client per server process (demo or live).

Built once per process with st.cache_resource and shared by every browser session; the key is
hashed into the cache key, never stored or shown."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st

from comet.client import Client
from comet.config import Settings
from comet.sim import Sim

DEMO_KEY = "demo-key"  # the stand-in accepts any non-empty key


@dataclass(frozen=True)
class Connection:
    client: Client
    demo: bool
    label: str  # what the sidebar badge says: a host, never the key


def read_secrets() -> Mapping[str, object]:
    """Top-level secrets, or {} when the app has no secrets file (st.secrets raises then)."""
    try:
        return {name: value for name, value in st.secrets.items() if not isinstance(value, Mapping)}
    except Exception:  # no secrets.toml at all: a normal, supported setup
        return {}


def settings() -> Settings:
    """Settings for this run; a malformed value stops the page with a clear message."""
    try:
        return Settings.from_sources(read_secrets())
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()


def connection() -> Connection:
    config = settings()
    if config.demo:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        sim = _demo_sim(str(config.data_dir / "demo-standin.json"))
        return Connection(client=_client(sim.url, "demo", _key=DEMO_KEY), demo=True, label="local stand-in")
    fingerprint = hashlib.sha256(f"{config.base_url}\n{config.api_key}".encode()).hexdigest()
    return Connection(
        client=_client(config.base_url, fingerprint, _key=config.api_key), demo=False, label=config.base_host
    )


@st.cache_resource(show_spinner=False)
def _client(base_url: str, fingerprint: str, *, _key: str) -> Client:
    # `fingerprint` makes a changed key build a new client; `_key` itself is never hashed.
    return Client(base_url, _key)


@st.cache_resource(show_spinner=False)
def _demo_sim(state_file: str) -> Sim:
    # Runs in this server process on a free loopback port; its state file lets a restarted
    # demo keep (and finish) the predictions it had.
    return Sim(port=0, start_delay=0.6, run_time=3.0, state_file=state_file).start()
