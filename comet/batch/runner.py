"""The BatchRunner: one per server process, sending the cells of every running batch."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import errors, redact
from ..ledger import Limits, Refusal
from ..prediction import Prediction
from ..store import HistoryError
from .cells import (
    CANCELED,
    CANCELED_NOTE,
    DEFAULT_CONCURRENCY,
    FAILED,
    PENDING,
    REFUSED,
    SENT,
    UNCERTAIN,
    Batches,
    CancelResult,
    Cell,
)
from .planning import BatchPlan, Estimator, catalog_prices

log = redact.logger("comet.batch")



# ---- the runner -----------------------------------------------------------------------------


class BatchRunner:
    """Sends the cells of every running batch in this database: one per server process, started
    by the app server (not a browser session). `create(model, input) -> Prediction` is the
    client's create (never retried by it); `track(prediction, creator, batch_id=...)` records it
    and has it followed (Tracker.track); `cancel(prediction_id)` cancels a running one (the tracker's).
    With a `ledger`, each create's `estimate` is reserved first against `limits`."""

    def __init__(
        self,
        batches: Batches,
        *,
        create: Callable[[str, dict[str, Any]], Prediction],
        track: Callable[[Prediction, str | None], Any],
        cancel: Callable[[str], Any] | None = None,
        ledger: Any = None,
        limits: Limits = Limits(),
        estimate: Estimator | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease: float = 60.0,
        poll: float = 3.0,
        backoff: tuple[float, float] = (2.0, 60.0),
        retry_after_max: float = 60.0,
        max_attempts: int = 30,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`lease`: how long a claimed cell stays this runner's without renewal (renewed every
        third of it while its create runs), so how soon a dead process's cell is called
        uncertain; `poll`: the longest wait between looks at the table (another replica may have
        added a batch); `backoff`: first and longest pause after a 429 without Retry-After (a
        Retry-After is respected up to `retry_after_max`); `max_attempts`: 429s or unreachable
        API per cell before it fails."""
        if not 1 <= concurrency <= 32:
            raise ValueError("concurrency must be from 1 to 32")
        self.batches = batches
        self._create = create
        self._track = track
        self._cancel = cancel
        self._ledger = ledger
        self._limits = limits
        self._estimate = estimate or catalog_prices()
        self.concurrency = concurrency
        self._lease = lease
        self._poll = poll
        self._backoff = backoff
        self._retry_after_max = retry_after_max
        self._max_attempts = max_attempts
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:batch:{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, int], Cell] = {}
        self._unwritten: list[Callable[[], Any]] = []  # outcomes to write once the database is back
        self._held: set[tuple[str, int]] = set()  # their cells: leases kept meanwhile
        self._paused_until = 0.0
        self._throttled = 0  # 429s in a row
        self._renew_at = 0.0
        self._recover_at = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> BatchRunner:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="comet-batch-create")
            self._thread = threading.Thread(target=self._run, name="comet-batch", daemon=True)
            self._thread.start()
        return self

    def stop_sending(self) -> None:
        """Claim and send nothing new from now on; creates in flight still end (`stop` waits)."""
        self._stopping.set()
        self._wake.set()

    @property
    def sending(self) -> bool:
        """Started and not told to stop: this runner may still claim cells."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def stop(self) -> None:
        """Send nothing new and wait for the creates in flight (each bounded by the client's
        deadline), so an orderly restart leaves no cell uncertain. Cells claimed but not yet
        sent go back to pending. Callers take turns: a second one (the shutdown, while a
        replaced runner is still ending on another thread) returns once the first is done."""
        self.stop_sending()
        with self._stop_lock:
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> BatchRunner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Look at the table now (a batch was just added)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # ---- what a page calls ----------------------------------------------------------------

    def submit(self, batch_plan: BatchPlan, *, creator: str | None = None, title: str = "") -> str:
        """Store the batch and start sending it now; returns its id. ValueError for a plan with
        problems. The creator is whose spending limit each create counts against."""
        batch_id = self.batches.add(batch_plan, creator=creator, title=title)
        self.wake()
        return batch_id

    def send_again(self, batch_id: str, *, uncertain: bool = False) -> int:
        """Send the finished batch's failed and refused cells again (and, only when asked, the
        uncertain ones, which may have been created and billed already); returns how many. Each
        is reserved against the spending limit again as it is sent."""
        states = (FAILED, REFUSED, UNCERTAIN) if uncertain else (FAILED, REFUSED)
        count = self.batches.send_again(batch_id, states)
        self.wake()
        return count

    def cancel(self, batch_id: str) -> CancelResult:
        """Never send the batch's unsent cells, and ask the API to cancel its running predictions
        (one call each, from this thread). A create in flight right now still lands; its
        prediction is canceled as soon as it is known."""
        unsent = self.batches.cancel(batch_id, now=self._clock())
        self.wake()
        running = self.batches.running_predictions(batch_id)
        problems = []
        if running and self._cancel is None:
            problems.append("Running predictions cannot be canceled from here; they finish on their own.")
            running = []
        for prediction_id in running:
            problem = self._cancel_prediction(prediction_id)
            if problem:
                problems.append(problem)
        return CancelResult(unsent, len(running), tuple(dict.fromkeys(problems)))

    def _cancel_prediction(self, prediction_id: str) -> str | None:
        try:
            self._cancel(prediction_id)
        except errors.CometError as exc:
            return redact.scrub(str(exc))
        except Exception:
            log.exception("cancel of %s failed", prediction_id)
            return "Something went wrong while canceling."
        return None

    # ---- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            with self._lock:
                busy = bool(self._in_flight)
            if stopping and not busy:
                break
            self._wake.clear()
            pause = self._poll
            try:
                self._flush_unwritten()
                self._renew()
                if not stopping:
                    self._recover()
                    pause = self._dispatch()
            except HistoryError as exc:
                log.warning("batch runner: %s (%s)", exc, exc.detail)
            except Exception:
                log.exception("batch runner could not read its table")
            self._wake.wait(min(pause, self._lease / 3))
        try:  # a last try at what the database would not take
            self._flush_unwritten()
        except Exception:
            log.warning("batch runner stopped with %d outcome(s) unwritten", len(self._unwritten))

    def _dispatch(self) -> float:
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        with self._lock:
            free = self.concurrency - len(self._in_flight) - len(self._held)
        if free <= 0:
            return self._poll  # a finished create wakes the loop
        claimed = self.batches.claim(self.owner, now=now, lease=self._lease, limit=free,
                                     concurrency=self.concurrency)
        for cell in claimed:
            with self._lock:
                self._in_flight[(cell.batch_id, cell.idx)] = cell
            self._pool.submit(self._send_safely, cell)
        return self._poll

    def _recover(self) -> None:
        """Every `poll` seconds: cells of a sender that died (their lease ran out)."""
        now = self._clock()
        if now < self._recover_at:
            return
        self._recover_at = now + self._poll
        for batch_id, idx, reservation in self.batches.recover(now=now):
            log.warning("batch %s cell %d: its sender stopped mid-create; marked uncertain", batch_id, idx)
            if reservation and self._ledger is not None:
                self._ledger.unconfirmed(reservation)  # it may have been billed: stays counted

    def _renew(self) -> None:
        now = self._clock()
        if now < self._renew_at:
            return
        with self._lock:
            keys = set(self._in_flight) | self._held
        self.batches.renew(self.owner, keys, now + self._lease)
        self._renew_at = now + self._lease / 3

    def _flush_unwritten(self) -> None:
        while True:
            with self._lock:
                if not self._unwritten:
                    return
                write = self._unwritten[0]
            write()  # raises while the database is still away
            with self._lock:
                self._unwritten.pop(0)

    # ---- one cell -------------------------------------------------------------------------

    def _send_safely(self, cell: Cell) -> None:
        key = (cell.batch_id, cell.idx)
        try:
            self._send(cell)
        except Exception:  # a bug must neither kill a worker nor leave the cell in limbo
            log.exception("batch %s cell %d: sending failed", cell.batch_id, cell.idx)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
            self._wake.set()

    def _send(self, cell: Cell) -> None:
        try:
            state, stop_note = self.batches.gate(cell.batch_id)
        except HistoryError:
            self._outcome(cell, PENDING)  # not sent: try again when the database is back
            return
        if state == CANCELED:
            self._outcome(cell, CANCELED, error=CANCELED_NOTE)
            return
        if stop_note:
            self._outcome(cell, REFUSED, error=stop_note)
            return
        if self._stopping.is_set():
            self._outcome(cell, PENDING)
            return
        reservation = None
        if self._ledger is not None:
            found = self._estimate(cell.model, cell.input)
            try:
                reservation = self._ledger.reserve(cell.creator, cell.model, found.usd if found else 0.0, self._limits)
            except HistoryError:
                self._outcome(cell, PENDING)
                return
            if isinstance(reservation, Refusal):
                self._outcome(cell, REFUSED, error=reservation.message)
                self._write(lambda: self.batches.stop_unsent(cell.batch_id, reservation.message, now=self._clock()),
                            cell)
                return
            self._write(lambda: self.batches.note_reservation(self.owner, cell, reservation), cell)
        prediction = None
        try:
            prediction = self._create(cell.model, cell.input)
        except (errors.RateLimited, errors.ConnectionFailed) as exc:  # certainly not accepted
            self._settle_reservation("release", reservation)
            self._retry_later(cell, exc)
            return
        except errors.CreateUncertain as exc:
            self._settle_reservation("unconfirmed", reservation)
            self._outcome(cell, UNCERTAIN, error=redact.scrub(str(exc)))
            return
        except errors.CometError as exc:
            self._settle_reservation("release", reservation)
            self._outcome(cell, FAILED, error=redact.scrub(str(exc)))
            return
        except Exception:
            log.exception("create of batch %s cell %d failed", cell.batch_id, cell.idx)
            self._settle_reservation("unconfirmed", reservation)
            self._outcome(cell, UNCERTAIN, error="Something went wrong while sending; it may have been accepted.")
            return
        with self._lock:
            self._throttled = 0
        try:
            # The history first (an accepted prediction is never lost), with its batch: the
            # tracker keeps both if the database is down and records them when it is back.
            self._track(prediction, cell.creator, batch_id=cell.batch_id)
        except Exception:
            log.exception("batch %s cell %d: could not hand %s to the tracker", cell.batch_id, cell.idx, prediction.id)
        if reservation is not None:
            self._settle_reservation("attach", reservation, prediction.id)
        state = self._outcome(cell, SENT, prediction_id=prediction.id)
        if state == CANCELED and self._cancel is not None:  # canceled while this create was in flight
            self._cancel_prediction(prediction.id)

    def _retry_later(self, cell: Cell, exc: errors.CometError) -> None:
        attempts = cell.attempts + 1
        if attempts >= self._max_attempts:
            self._outcome(cell, FAILED, attempts=attempts,
                          error=f"Not sent after {attempts} tries: {redact.scrub(str(exc))}")
            return
        first, cap = self._backoff
        with self._lock:
            self._throttled += 1
            wait = exc.retry_after if exc.retry_after is not None else first * 2 ** min(self._throttled - 1, 20)
            wait = min(max(wait, 0.0), cap if exc.retry_after is None else self._retry_after_max)
            until = self._clock() + wait
            self._paused_until = max(self._paused_until, until)
        log.info("batch %s cell %d: %s; trying again in %.1f s", cell.batch_id, cell.idx, exc, wait)
        self._outcome(cell, PENDING, not_before=until, attempts=attempts,
                      error=f"Waiting to try again: {redact.scrub(str(exc))}")

    def _outcome(self, cell: Cell, state: str, **values: Any) -> str | None:
        """Write a cell's outcome; kept and retried by the loop while the database is away (the
        lease is renewed meanwhile, so no other runner calls it uncertain)."""
        result: list[str | None] = [None]

        def write() -> None:
            result[0] = self.batches.settle(self.owner, cell, state, now=self._clock(), **values)

        self._write(write, cell)
        return result[0]

    def _write(self, write: Callable[[], Any], cell: Cell) -> None:
        key = (cell.batch_id, cell.idx)
        try:
            write()
        except HistoryError as exc:
            log.warning("batch %s cell %d: %s; will write it when the database is back", cell.batch_id, cell.idx, exc)

            def again() -> None:
                write()
                with self._lock:
                    self._held.discard(key)

            with self._lock:
                self._held.add(key)
                self._unwritten.append(again)

    def _settle_reservation(self, action: str, reservation: str | None, *args: str) -> None:
        if reservation is None or self._ledger is None:
            return
        try:
            getattr(self._ledger, action)(reservation, *args)
        except HistoryError:  # the prediction is safe with the tracker; only its cost row waits
            log.warning("could not update spend reservation %s", reservation)
