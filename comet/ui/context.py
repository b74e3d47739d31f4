"""The app's shared objects, built once per server process with st.cache_resource and shared
by every browser session: the client (live or demo), the history store and the one tracker.

The key is hashed into cache keys (a changed key builds a new client), never stored or shown."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import streamlit as st

from comet import objectstore, prices
from comet.batch import Batches, BatchRunner
from comet.client import Client
from comet.config import Settings
from comet.ledger import Ledger, Limits
from comet.media import MediaUnavailable
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from comet.ui.own_key import own_key
from comet.ui.safe import plain

RETENTION_EVERY = 3600.0  # seconds between retention passes
DEMO_KEY = "demo-key"  # the stand-in accepts any non-empty key
SESSION_CLIENT_KEY = "own.client"


@dataclass(frozen=True)
class Connection:
    client: Client
    store: Store
    tracker: Tracker
    demo: bool
    label: str  # what the sidebar badge says: a host, never the key
    ledger: Ledger
    limits: Limits
    price_rules: Mapping[str, prices.Rule]
    personal: bool = False  # the visitor's own key, for this tab only
    batches: Batches | None = None  # stored batches (readable with any key)
    # The process's one batch sender (the server's key): None with a personal key, which cannot
    # run batches (the runner sends with the server key, not the visitor's).
    batch_runner: BatchRunner | None = None

    def estimate(self, model_id: str, model_input: Mapping) -> prices.Estimate | None:
        return prices.estimate(model_id, model_input, self.price_rules)

    def track(self, prediction, creator: str | None, *, parent: tuple[str, int] | None = None) -> None:
        """Hand a prediction to the tracker; one made with a personal key is polled with it.
        `parent`: the stored image (prediction id, output idx) it edits."""
        self.tracker.track(prediction, creator=creator, client=self.client if self.personal else None, parent=parent)

    def follow(self, prediction_id: str, creator: str | None):
        """Look a prediction up by id with this connection's key and have the tracker follow it:
        adds one made elsewhere, or revives one whose tracking stopped (then polled with the key
        in use now). Raises CometError (e.g. NotFound, AuthError) and then changes nothing."""
        prediction = self.client.get(prediction_id)
        self.track(prediction, creator=creator)
        return prediction

    def cancel(self, prediction_id: str):
        """Cancel with this connection's key; the tracker records the answer (pages never write
        tracked predictions). Raises CannotCancel or another CometError, and then changes nothing."""
        return self.tracker.cancel(prediction_id, client=self.client)


def read_secrets() -> Mapping[str, object]:
    """Top-level secrets and the [prices] table, or {} when the app has no secrets file
    (st.secrets raises then). Other tables ([auth]) are read where they are used."""
    try:
        return {name: value for name, value in st.secrets.items()
                if not isinstance(value, Mapping) or name == "prices"}
    except Exception:  # no secrets.toml at all: a normal, supported setup
        return {}


def settings() -> Settings:
    """Settings for this run; a malformed value stops the page with a clear message."""
    try:
        return Settings.from_sources(read_secrets())
    except ValueError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        st.stop()


def connection() -> Connection:
    config = settings()
    if personal_key := own_key():
        return _personal_connection(config, personal_key)
    return shared_connection(config)


def shared_connection(config: Settings) -> Connection:
    """The process's client, store and running tracker for these settings (no session needed:
    the server builds it at start, so the tracker resumes before anyone opens a page)."""
    if config.demo:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        sim = _demo_sim(str(config.data_dir / "demo-standin.json"))
        base_url, key, label = sim.url, DEMO_KEY, "local stand-in"
    else:
        base_url, key, label = config.base_url, config.api_key, config.base_host
    fingerprint = _fingerprint(base_url, key)
    store_id = _store_id(config)
    client = _client(base_url, fingerprint, _key=key)
    store = _store(store_id, _settings=config)
    tracker = _tracker(fingerprint, store_id, base_url, _client=client, _store=store)
    spending = _spending(config, store_id, store)
    batches = _batches(store_id, _store=store)
    runner = _batch_runner(fingerprint, store_id, _fingerprint(repr(sorted(config.prices.items()))),
                           repr(spending["limits"]), config.batch_concurrency, _batches=batches, _client=client,
                           _tracker=tracker, _ledger=spending["ledger"], _limits=spending["limits"],
                           _rules=spending["price_rules"])
    return Connection(client=client, store=store, tracker=tracker, demo=config.demo, label=label,
                      batches=batches, batch_runner=runner, **spending)


def _spending(config: Settings, store_id: str, store: Store) -> dict:
    rules = prices.rules(config.prices)
    ledger = _ledger(store_id, _fingerprint(repr(sorted(config.prices.items()))), _store=store, _rules=rules)
    limits = Limits(config.spend_limit_monthly, config.spend_limit_daily_per_person)
    return {"ledger": ledger, "limits": limits, "price_rules": rules}


def _personal_connection(config: Settings, personal_key: str) -> Connection:
    """A visitor's own key, for this tab: its client lives in this session only; the store and
    the tracker are the process's live ones (the tracker polls this session's predictions with
    this client, held in memory)."""
    live = replace(config, api_key=personal_key)
    store_id = _store_id(live)
    store = _store(store_id, _settings=live)
    if config.demo:  # no server key: a live tracker that polls only what personal keys created
        tracker = _personal_keys_tracker(store_id, config.base_url, _store=store)
    else:
        fingerprint = _fingerprint(config.base_url, config.api_key)
        server_client = _client(config.base_url, fingerprint, _key=config.api_key)
        tracker = _tracker(fingerprint, store_id, config.base_url, _client=server_client, _store=store)
    fingerprint = _fingerprint(config.base_url, personal_key)
    held = st.session_state.get(SESSION_CLIENT_KEY)
    if held is None or held[0] != fingerprint:
        held = (fingerprint, Client(config.base_url, personal_key, personal=True))
        st.session_state[SESSION_CLIENT_KEY] = held
        _scrub_once(store_id, fingerprint, _store=store, _key=personal_key)
    return Connection(client=held[1], store=store, tracker=tracker, demo=False,
                      label=f"{config.base_host} · your key", personal=True,
                      batches=_batches(store_id, _store=store), **_spending(config, store_id, store))


def _store_id(config: Settings) -> str:
    """Which store these settings mean: the database and where its images go (a new bucket, or
    rotated bucket credentials, take effect without a restart; only a hash is kept)."""
    s3 = config.s3
    bucket = "" if s3 is None else "\n".join([str(s3), s3.endpoint, s3.region, s3.access_key_id,
                                               s3.secret_access_key, s3.session_token or ""])
    return _fingerprint(str(config.data_dir), str(config.demo), config.database_url or "", config.media_url, bucket)


def current_user() -> str | None:
    """Who is signed in, recorded as the creator of what they run: the st.login user, or the name
    given with the shared password (comet/ui/access.py keeps it in the session as "access.passed")."""
    user = st.user
    if user.get("is_logged_in"):
        return str(user.get("email") or user.get("name") or user.get("sub") or "") or None
    name = st.session_state.get("access.passed")
    return name if isinstance(name, str) and name else None


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# on_release: clearing the cache (a changed setting, or a test) closes what the entry held.
@st.cache_resource(show_spinner=False, on_release=Client.close)
def _client(base_url: str, fingerprint: str, *, _key: str) -> Client:
    return Client(base_url, _key)


@st.cache_resource(show_spinner=False, on_release=Store.close)
def _store(store_id: str, *, _settings: Settings) -> Store:
    store = Store.for_settings(_settings, media=objectstore.media_for(_settings))
    # Images an older release kept inside the database move to the media store, on a thread of
    # their own (resumable: a restart carries on where this one stopped).
    threading.Thread(target=_look_after_media, args=(store, _settings.media_retention_days),
                     name="comet-media", daemon=True).start()
    if _settings.api_key:  # older releases stored whatever an echoing upstream sent: mask it now
        _scrub_once(store_id, _fingerprint(_settings.base_url, _settings.api_key), _store=store,
                    _key=_settings.api_key)
    return store


def _look_after_media(store: Store, retention_days: float | None) -> None:
    """Move images out of the database (an older release's, or ones kept there while the media
    store was unavailable), then (with COMET_MEDIA_RETENTION_DAYS) prune full images past their
    time; once an hour while the store is open."""
    log = logging.getLogger("comet.store")
    while not store.closed:
        try:
            if store.media is not None:
                store.media.check()  # a refused or missing bucket is named in the log at start
            store.move_media()
        except MediaUnavailable as exc:  # every image stays readable from the database meanwhile
            log.warning("could not move stored images yet: %s", exc)
        except Exception:
            log.warning("could not move stored images yet", exc_info=True)
        if retention_days is not None:
            try:
                store.prune_media(before=time.time() - retention_days * 86400)
            except Exception:
                log.warning("could not prune old images yet", exc_info=True)
        store.wait_closed(RETENTION_EVERY)


@st.cache_resource(show_spinner=False)
def _ledger(store_id: str, prices_id: str, *, _store: Store, _rules: Mapping[str, prices.Rule]) -> Ledger:
    """The spend ledger on this store. Predictions recorded before it existed (or tracked by id)
    get their estimated cost at start, on a thread of their own: about 9 s for 100,000 on the
    first start after an upgrade (bench/usage_page.py), which no page should wait for."""
    ledger = Ledger(_store)

    def backfill() -> None:
        try:
            ledger.backfill(_rules)
        except Exception:  # the next start tries again; nothing is lost meanwhile
            logging.getLogger("comet.ledger").warning("could not cost older predictions yet", exc_info=True)

    threading.Thread(target=backfill, name="comet-ledger-backfill", daemon=True).start()
    return ledger


@st.cache_resource(show_spinner=False)
def _scrub_once(store_id: str, fingerprint: str, *, _store: Store, _key: str) -> bool:
    """Mask a key in rows stored before this release scrubbed answers: once per key and store in
    this process (a scan of the text columns, only matching rows are written)."""
    _store.scrub_secrets([_key])
    return True


# One entry each: the server's key of now. A tracker left polling with a key rotated since would
# hold predictions' leases and give up on them with that key's refusal once it is revoked.
@st.cache_resource(show_spinner=False, max_entries=1, on_release=Tracker.stop)
def _tracker(fingerprint: str, store_id: str, base_url: str, *, _client: Client | None, _store: Store) -> Tracker:
    # The one poller of this process. Output downloads may reach loopback only when the API
    # itself is local (the stand-in serves its own files).
    return Tracker(_client, _store, allow_private_downloads=_is_local(base_url)).start()


@st.cache_resource(show_spinner=False, max_entries=1, on_release=Tracker.stop)
def _personal_keys_tracker(store_id: str, base_url: str, *, _store: Store) -> Tracker:
    # Demo mode's second poller: what visitors made with their own keys (the demo's own
    # predictions are the demo tracker's).
    return Tracker(None, _store, allow_private_downloads=_is_local(base_url)).start()


@st.cache_resource(show_spinner=False)
def _batches(store_id: str, *, _store: Store) -> Batches:
    return Batches(_store)  # creates the batch tables once per store


_RUNNERS: weakref.WeakSet[BatchRunner] = weakref.WeakSet()  # built here, not yet stopped for good


def _release_runner(runner: BatchRunner) -> None:
    """A runner replaced by one with other settings (a lowered spending limit, new prices, another
    key) claims nothing more at once; its creates in flight (up to the create deadline) end on a
    thread of their own rather than on the page run that replaced it."""
    runner.stop_sending()
    if runner.in_flight:
        threading.Thread(target=runner.stop, name="comet-batch-release", daemon=True).start()
    else:
        runner.stop()  # nothing to wait for: done before the next page (or test) builds anything


def stop_batch_runners() -> None:
    """At a clean shutdown, before the caches (and the database) are released: every runner ends
    its creates in flight and writes their outcomes, so a restart finds no cell uncertain. Each
    wait is bounded by the client's create deadline."""
    for runner in list(_RUNNERS):
        runner.stop()
        _RUNNERS.discard(runner)


# One entry: the server's settings of now. An older runner, still sending with the limits it was
# built with, would pass a limit lowered since.
@st.cache_resource(show_spinner=False, max_entries=1, on_release=_release_runner)
def _batch_runner(fingerprint: str, store_id: str, prices_id: str, limits_id: str, concurrency: int, *,
                  _batches: Batches, _client: Client, _tracker: Tracker, _ledger: Ledger, _limits: Limits,
                  _rules: Mapping[str, prices.Rule]) -> BatchRunner:
    # The one sender of batch cells in this process, with the server's key: built with the shared
    # connection (so the lifespan starts it and an interrupted batch resumes at server start).
    runner = BatchRunner(_batches, create=_client.create, track=_tracker.track, cancel=_tracker.cancel,
                         ledger=_ledger, limits=_limits, estimate=functools.partial(prices.estimate, price_rules=_rules),
                         concurrency=concurrency).start()
    _RUNNERS.add(runner)
    return runner


@st.cache_resource(show_spinner=False, on_release=Sim.stop)
def _demo_sim(state_file: str) -> Sim:
    # Runs in this server process on a free loopback port; its state file lets a restarted
    # demo keep (and finish) the predictions it had.
    return Sim(port=0, start_delay=0.6, run_time=3.0, state_file=state_file).start()
