"""The one poller: follows every unfinished prediction in the store until it ends, and saves the
outputs of those that succeed before their URLs expire.

It takes its work from the store (`claim_due()`), so it needs no page open, resumes whatever was
unfinished after a restart, and sees rows that other processes record. Browser sessions read the
store only, so upstream traffic grows with time, not with the number of people watching.

Several processes (app replicas) may each run a tracker on one database: a tracker claims a
prediction with a lease in the database before polling it, renews the lease while the poll runs,
and releases it with the write that stores the answer. So each prediction is polled by one
tracker at a time, and the predictions of a tracker that died are taken over once its leases
run out (`lease`, 60 s by default).

A poll is bounded (the client's and the downloader's wall-clock deadlines), and a poll that has
run longer than `stall_after` stops counting against `workers`: a hostile upstream that answers
some predictions a byte at a time holds only those polls, never the healthy ones behind them
(up to `max_stalled` such polls run beside the workers).

Predictions whose tracking stopped because CometAPI refused the server's key (within the last
`RESUME_WINDOW`) are resumed by a tracker with a server key once that key is seen to work: at
start it retries the newest one, and its first accepted poll brings back the rest. So fixing or
rotating COMETAPI_KEY needs no Resume click per prediction, and a key still refused costs one
request per start.

When the database is unreachable the tracker keeps looping: it loses nothing (a prediction it
could not record is kept in memory and recorded when the database is back; a poll whose answer
could not be written is simply repeated) and doubles nothing (storing outputs is exactly once).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from . import errors, redact
from .client import SERVER_KEY_REJECTED, Client
from .fetch import FetchError, fetch_output
from .prediction import SUCCEEDED, Prediction
from .store import DEFAULT_LEASE, HistoryError, Record, Store

log = redact.logger("comet.tracker")

# (age of the prediction in seconds, poll interval until then): quick while a fast model may
# finish, slower for long runs.
DEFAULT_SCHEDULE: tuple[tuple[float, float], ...] = ((15.0, 1.0), (60.0, 2.0), (300.0, 5.0), (math.inf, 15.0))
DEFAULT_BACKOFF = (2.0, 60.0)  # first wait after a failed poll, doubling up to the cap
# Around the end a run's logs predict (start + steps x step time): poll just after it, then a
# few times quickly if it was not quite over, instead of up to a whole schedule interval late.
END_MARGIN = 0.05
LATE_WINDOW = 1.5
LATE_INTERVAL = 0.25
OUTPUT_LIFETIME = 3600.0  # the API deletes output files an hour after the run ends
RESUME_WINDOW = 24 * 3600.0  # stops for a refused server key this recent are resumed by a working key
_PROBE, _RESUME_ALL, _DONE = "probe", "resume all", "done"

NOT_FOUND_NOTE = "CometAPI no longer knows this prediction (404)."
EXPIRED_NOTE = "The outputs expired before they could be saved."
NO_OUTPUT_NOTE = "CometAPI reported success but listed no image that could be read."
PERSONAL_KEY_NOTE = ("Made with a visitor's own key, which is not kept after a restart: enter that key "
                     "under Use your own key, then press Resume tracking.")


class Tracker:
    def __init__(
        self,
        client: Client | None,
        store: Store,
        *,
        allow_private_downloads: bool,
        workers: int = 4,
        deadline: float = 45 * 60,
        clock: Callable[[], float] = time.time,
        schedule: Sequence[tuple[float, float]] = DEFAULT_SCHEDULE,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
        max_sleep: float = 2.0,
        lease: float = DEFAULT_LEASE,
        owner: str | None = None,
        stall_after: float = 2.0,
        max_stalled: int = 28,
    ) -> None:
        """`allow_private_downloads` only when the API itself is local (the stand-in); `deadline`
        is how long after creation a prediction may stay unfinished; `max_sleep` bounds the wait
        between looks at the store, so rows recorded by other processes are picked up. `lease`
        is how long a claim on a prediction lasts without renewal (renewed every third of it
        while a poll runs), so how soon another process takes over after this one dies; `owner`
        names this tracker in the leases (default: host, process id and a random part).
        `allow_private_downloads` lets downloads reach a private address only at the API's own
        host and port. A poll running longer than `stall_after` seconds frees its worker slot;
        at most `max_stalled` such slow polls run at once (each ends by its deadlines)."""
        self._client = client  # None: only predictions tracked with their own client are polled
        # Stops for a refused server key: PROBE (retry the newest) at start, then RESUME_ALL once a
        # poll with the server key is accepted, then DONE. Without a server key there is none.
        self._resume_step = _DONE if client is None else _PROBE
        self._clients: dict[str, Client] = {}  # prediction id -> the personal client that made it
        self._store = store
        self._allow_private = allow_private_downloads
        self._workers = workers
        self._stall_after = stall_after
        self._max_stalled = max_stalled
        self._deadline = deadline
        self._clock = clock
        self._schedule = tuple(schedule)
        self._backoff = backoff
        self._max_sleep = max_sleep
        self._lease = lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._in_flight: dict[str, float] = {}  # id -> when its poll started: never two polls of one id
        self._poll_done = threading.Condition(self._lock)
        # Per id: how many polls have finished (pages wait for the next one), and when the run
        # should end by its logs (epoch seconds); only for what this tracker polls.
        self._news: dict[str, int] = {}
        self._ends: dict[str, float] = {}
        # track() while the store was down: (prediction, creator, parent, batch id)
        self._unrecorded: list[tuple[Prediction, str | None, tuple[str, int] | None, str | None]] = []
        self._renew_at = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Tracker:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._pool = ThreadPoolExecutor(self._workers + self._max_stalled, thread_name_prefix="comet-tracker-poll")
            self._thread = threading.Thread(target=self._run, name="comet-tracker", daemon=True)
            self._thread.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stop polling. Polls still running are given `grace` seconds to finish; one that takes
        longer (a hanging upstream, retries against a dead one) is left behind rather than holding
        up a shutdown or a cache clear: the leases are released below, so whatever it would write
        is fenced off (`Store.update` needs the lease) and the next tracker asks again."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._lock:
            if not self._poll_done.wait_for(lambda: not self._in_flight, timeout=grace):
                log.info("tracker %s stopped with %d poll(s) still running; their answers will not be written",
                         self.owner, len(self._in_flight))
        try:  # hand what this tracker held to the other replicas now, not when the leases end
            self._store.release_leases(self.owner)
        except Exception:
            log.warning("could not release the leases of %s; they run out by themselves", self.owner)

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Look at the store now (a prediction was just recorded)."""
        self._wake.set()

    def track(self, prediction: Prediction, creator: str | None = None, client: Client | None = None, *,
              parent: tuple[str, int] | None = None, batch_id: str | None = None) -> None:
        """Record a prediction and have it followed. If the store cannot be reached, it is kept
        here and recorded as soon as the store is back (an accepted prediction is never lost).
        An id already in the history whose tracking stopped is followed again (Store.record).
        `client`: one made with a visitor's own key is polled with that key, held in memory only.
        `parent` (prediction id, output idx: the image it edits) and `batch_id` are recorded with it."""
        if client is not None:
            with self._lock:
                self._clients[prediction.id] = client
        try:
            self._record(prediction, creator, parent, batch_id)
        except HistoryError:
            log.warning("history unavailable: prediction %s will be recorded when it is back", prediction.id)
            with self._lock:
                self._unrecorded.append((prediction, creator, parent, batch_id))
        self.wake()

    def cancel(self, prediction_id: str, client: Client | None = None) -> Prediction:
        """Ask CometAPI to cancel a prediction (with `client`: the key of whoever asks; else the
        one it is polled with) and record the answer. A final status ends tracking at once;
        anything else (a cancel still under way, a success that came first) makes the prediction
        due now, so the poll that follows records it, outputs included.

        Raises CannotCancel when the server has no cancel route, another CometError when the
        cancel failed or the answer is about another prediction; nothing is written then."""
        client = client or self._clients.get(prediction_id, self._client)
        if client is None:
            raise errors.AuthError(PERSONAL_KEY_NOTE, personal=True)
        prediction = client.cancel(prediction_id)
        if prediction.id != prediction_id:  # written without a lease below: never to another row
            raise errors.BadResponse("CometAPI answered the cancel with another prediction's id.")
        ended = prediction.is_terminal and prediction.status != SUCCEEDED
        try:
            # Not fenced by a lease: whichever tracker polls it, the user's cancel is the latest
            # news, and a final status ends tracking, so a poll already under way cannot write
            # its older answer over this one (Store.update with an owner needs an active row).
            self._store.update(prediction, next_poll_at=None if ended else self._clock())
        except HistoryError as exc:  # upstream has it; the next poll records the same end
            log.warning("prediction %s: cancel not recorded (%s); the next poll will", prediction_id, exc)
        if ended:
            self._forget_client(prediction_id)
        self.wake()
        return prediction

    def news_token(self, prediction_id: str) -> int:
        """A mark to wait from (take it before reading the store, so no write is missed)."""
        with self._lock:
            return self._news.get(prediction_id, 0)

    def wait_for_news(self, prediction_id: str, token: int, timeout: float) -> bool:
        """Wait until a poll of this prediction has finished since `token`, at most `timeout` s."""
        with self._lock:
            return self._poll_done.wait_for(lambda: self._news.get(prediction_id, 0) != token, timeout)

    def ends_within(self, prediction_id: str, seconds: float) -> bool:
        """Whether this tracker expects the run to end (and so to poll it) within `seconds`."""
        with self._lock:
            end = self._ends.get(prediction_id)
        return end is not None and end - self._clock() <= seconds

    @property
    def unrecorded(self) -> list[str]:
        """Ids given to track() that wait for the store to be reachable again."""
        with self._lock:
            return [pending[0].id for pending in self._unrecorded]

    # ---- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking, so a wake during the look is not lost
            try:
                self._record_pending()
                self._resume_refused()
                self._renew_leases()
                pause = self._dispatch_due()
            except HistoryError as exc:  # the database is unreachable: try again shortly
                log.warning("tracker: %s (%s)", exc, exc.detail)
                pause = self._max_sleep
            except Exception:
                log.exception("tracker could not read the store")
                pause = self._max_sleep
            self._wake.wait(min(pause, self._lease / 3))

    def _resume_refused(self, *, all_of_them: bool = False) -> None:
        """The probe (at start): the newest prediction stopped for a refused server key is polled
        again. Resume all (after a poll with the server key was accepted): the rest of them."""
        step = _RESUME_ALL if all_of_them else _PROBE
        with self._lock:
            if self._resume_step != step:
                return
            self._resume_step = _DONE if all_of_them else _RESUME_ALL  # claimed: each step runs once
        try:
            count = self._store.resume_stopped(SERVER_KEY_REJECTED, since=self._clock() - RESUME_WINDOW,
                                               limit=None if all_of_them else 1, now=self._clock())
        except Exception:
            with self._lock:
                self._resume_step = step  # the database was away: the next loop tries again
            raise
        if count and all_of_them:
            log.info("the server's key works again: resumed %d prediction(s) stopped by its refusal", count)
        self.wake()

    def _record_pending(self) -> None:
        """Record what track() could not, oldest first."""
        while True:
            with self._lock:
                if not self._unrecorded:
                    return
                pending = self._unrecorded[0]
            self._record(*pending)  # raises while the store is still down
            with self._lock:
                self._unrecorded.pop(0)

    def _record(self, prediction: Prediction, creator: str | None, parent: tuple[str, int] | None = None,
                batch_id: str | None = None) -> None:
        self._store.record(prediction, creator=creator, parent=parent, batch_id=batch_id)
        if self._pinned(prediction.id):
            # Only this process holds the key that can poll it: keep it leased to this tracker
            # (renewed while the process lives), so no other replica takes it.
            self._store.hold_lease(self.owner, prediction.id, self._clock() + self._lease)

    def _pinned(self, prediction_id: str) -> bool:
        with self._lock:
            return prediction_id in self._clients

    def _renew_leases(self) -> None:
        """Every third of the lease, extend the claims of the polls still running, and of the
        predictions only this tracker can poll (made with a personal key it holds)."""
        now = self._clock()
        if now < self._renew_at:
            return
        with self._lock:
            busy = set(self._in_flight) | set(self._clients)
        if busy:
            lost = busy - self._store.renew_leases(self.owner, busy, now + self._lease)
            if lost:  # this poll overran its lease: its answer will not be written (fenced)
                log.warning("tracker %s lost the lease of %s", self.owner, ", ".join(sorted(lost)))
        self._renew_at = now + self._lease / 3

    def _dispatch_due(self) -> float:
        """Claim due predictions for free workers; return how long to wait before looking again.
        A poll running longer than stall_after no longer holds a worker (it waits on a slow
        upstream, not on this machine), so healthy predictions keep being served."""
        now = self._clock()
        started_before = time.monotonic() - self._stall_after
        with self._lock:
            busy = set(self._in_flight)
            stalled = sum(1 for started in self._in_flight.values() if started < started_before)
        free = min(self._workers - (len(busy) - stalled), self._workers + self._max_stalled - len(busy))
        if free > 0:
            claimed = self._store.claim_due(self.owner, now=now, lease=self._lease, limit=free, exclude=busy)
            for record in claimed:
                with self._lock:
                    self._in_flight[record.id] = time.monotonic()
                busy.add(record.id)
                self._pool.submit(self._poll_safely, record)
        next_at = self._store.next_poll_time(exclude=busy, owner=self.owner)
        if next_at is None:
            return self._max_sleep
        return min(max(next_at - now, 0.0), self._max_sleep)

    def _poll_safely(self, record: Record) -> None:
        try:
            self._poll(record)
        except HistoryError as exc:
            # The answer could not be stored. The lease stays with this tracker, which claims the
            # prediction again (it is still due) once the database is back, and asks again.
            log.warning("prediction %s: %s; will poll again", record.id, exc)
        except Exception:  # a bug must neither kill a worker nor spin on one id
            log.exception("polling prediction %s failed", record.id)
            try:
                self._retry_later(record, "An internal error interrupted checking; retrying.")
            except Exception:
                log.exception("could not reschedule prediction %s", record.id)
        finally:
            with self._lock:
                self._in_flight.pop(record.id, None)
                if len(self._news) > 10_000:  # bounded: waiting pages wake once, harmlessly
                    self._news.clear()
                self._news[record.id] = self._news.get(record.id, 0) + 1
                self._poll_done.notify_all()
            self._wake.set()

    # ---- one poll -------------------------------------------------------------------------

    def _poll(self, record: Record) -> None:
        try:
            client = self._clients.get(record.id, self._client)
            if client is None:  # made with a personal key this process no longer holds
                self._give_up(record.id, PERSONAL_KEY_NOTE)
                return
            prediction = client.get(record.id)
        except errors.NotFound:
            self._give_up(record.id, NOT_FOUND_NOTE)
            return
        except errors.AuthError as exc:  # the message says whose key, and what to do
            self._give_up(record.id, str(exc))
            return
        except errors.CometError as exc:  # transient, or unknown: keep going with backoff
            self._retry_later(record, f"Last check failed: {exc}", retry_after=exc.retry_after)
            return
        if client is self._client:
            try:
                self._resume_refused(all_of_them=True)  # the server's key works
            except HistoryError as exc:
                log.warning("could not resume predictions stopped by a refused key yet: %s", exc)
        if prediction.status == SUCCEEDED:
            self._save_outputs(record, prediction)
        elif prediction.is_terminal:
            self._update(prediction)
            self._forget_client(record.id)
        elif self._past_deadline(record):
            self._give_up(record.id, self._deadline_note, latest=prediction)
        elif not prediction.is_known_status:
            note = f"CometAPI reported an unknown status {prediction.status!r}; still checking."
            self._update(prediction, next_poll_at=self._backoff_time(record), note=note)
        elif prediction.problems:  # a lying answer is polled on, but slowly and with a note
            self._update(prediction, next_poll_at=self._backoff_time(record), note=prediction.problem_note)
        else:
            self._update(prediction, next_poll_at=self._next_poll(record, prediction))

    def _save_outputs(self, record: Record, prediction: Prediction) -> None:
        """Download every output now; the prediction stays active until all are stored."""
        if prediction.data_removed:
            self._give_up(record.id, EXPIRED_NOTE, latest=prediction)
            return
        if not prediction.output:
            self._give_up(record.id, " ".join(filter(None, (NO_OUTPUT_NOTE, prediction.problem_note))),
                          latest=prediction)
            return
        client = self._clients.get(record.id, self._client)
        origin = urlsplit(client.base_url).netloc if self._allow_private and client is not None else None
        try:
            files = [fetch_output(url, private_origin=origin) for url in prediction.output]
        except FetchError as exc:
            if exc.gone or self._outputs_expired(prediction):
                self._give_up(record.id, EXPIRED_NOTE, latest=prediction)
            elif exc.retryable:
                note = f"Could not save the outputs yet ({exc}); trying again."
                self._update(prediction, next_poll_at=self._backoff_time(record), note=note)
            else:
                self._give_up(record.id, f"Could not save the outputs: {exc}", latest=prediction)
            return
        if self._store.save_outputs(record.id, files, latest=prediction, owner=self.owner):
            log.info("prediction %s: %d output(s) saved", record.id, len(files))
        else:
            log.info("prediction %s: outputs were already stored; these copies dropped", record.id)
        self._forget_client(record.id)

    def _update(self, prediction: Prediction, **changes: object) -> None:
        keep = self._pinned(prediction.id)
        if not self._store.update(prediction, owner=self.owner, keep_lease=keep, **changes):
            log.info("prediction %s: taken over by another tracker, or ended meanwhile; answer not written",
                     prediction.id)

    def _retry_later(self, record: Record, note: str, retry_after: float | None = None) -> None:
        if self._past_deadline(record):
            self._give_up(record.id, self._deadline_note)
            return
        next_at = max(self._backoff_time(record), self._clock() + (retry_after or 0.0))
        self._store.mark_poll_failure(record.id, note, next_at, owner=self.owner, keep_lease=self._pinned(record.id))

    def _give_up(self, prediction_id: str, note: str, *, latest: Prediction | None = None) -> None:
        """Stop tracking and say why, keeping the latest answer if there is one."""
        if self._store.give_up(prediction_id, note, latest=latest, owner=self.owner):
            log.info("prediction %s: gave up: %s", prediction_id, note)
        self._forget_client(prediction_id)

    def _forget_client(self, prediction_id: str) -> None:
        """A personal key is held only while something it made is still being followed."""
        with self._lock:
            self._clients.pop(prediction_id, None)
            self._ends.pop(prediction_id, None)

    @property
    def _deadline_note(self) -> str:
        return f"Gave up after {_duration(self._deadline)} without a final status."

    # ---- timing ---------------------------------------------------------------------------

    def _age(self, record: Record) -> float:
        # Our own recording time bounds it too: an upstream claiming a future created_at must
        # not keep a prediction "young" (polled every second) and short of its deadline for ever.
        born = min(record.created_at.timestamp(), record.recorded_at.timestamp())
        return self._clock() - born

    def _past_deadline(self, record: Record) -> bool:
        return self._age(record) >= self._deadline

    def _interval(self, record: Record) -> float:
        age = self._age(record)
        return next((interval for until, interval in self._schedule if age < until), self._schedule[-1][1])

    def _next_poll(self, record: Record, prediction: Prediction) -> float:
        """The schedule's next poll, or earlier: just after the end the logs predict."""
        now = self._clock()
        scheduled = now + self._interval(record)
        end = prediction.expected_end
        if end is None:
            return scheduled
        end_at = end.timestamp()
        with self._lock:
            self._ends[record.id] = end_at
        if end_at + END_MARGIN > now:
            return min(scheduled, end_at + END_MARGIN)
        if now - end_at < LATE_WINDOW:
            return min(scheduled, now + LATE_INTERVAL)
        return scheduled

    def _backoff_time(self, record: Record) -> float:
        """When to try again after `record.poll_failures` failures in a row (plus this one)."""
        first, cap = self._backoff
        return self._clock() + min(first * 2 ** min(record.poll_failures, 30), cap)

    def _outputs_expired(self, prediction: Prediction) -> bool:
        ended = prediction.completed_at
        return ended is not None and self._clock() > ended.timestamp() + OUTPUT_LIFETIME


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
