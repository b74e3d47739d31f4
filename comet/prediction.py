"""A prediction as the API describes it, parsed once from JSON into checked values.

The upstream is untrusted input: every field is checked here, once, so nothing later (the
store, History, the card, exports) ever meets a value it cannot handle. Unknown fields are
ignored and missing ones get neutral values; a value that is present but unusable (a year-9999
date, an infinite run time, an output that is neither a string nor a list, a megabyte of
status) is dropped and named in `problems`, so the tracker can say what was wrong."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

STARTING, PROCESSING = "starting", "processing"
SUCCEEDED, FAILED, CANCELED, ABORTED = "succeeded", "failed", "canceled", "aborted"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, ABORTED})
KNOWN_STATUSES = (STARTING, PROCESSING, SUCCEEDED, FAILED, CANCELED, ABORTED)
UNKNOWN = "unknown"  # what an unusable status becomes (a readable unknown one is kept as is)

# Replicate ids are 26 lower-case letters and digits; accept a little more (other providers,
# older ids) but nothing that could change a URL path: no slash, dot, percent or space.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{5,63}")
_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}/[a-z0-9][a-z0-9._-]{0,99}")
# A status we have not heard of is shown and polled on (the contract says so), if it is a word.
_STATUS_RE = re.compile(r"[a-z][a-z_]{0,31}")
_PERCENT_RE = re.compile(r"(\d{1,3})%\|")
_STEPS_RE = re.compile(r"(\d+)/(\d+) \[")
# A tqdm line's steps and rate: " 50%|█████     | 2/4 [00:01<00:01,  1.05s/it]" (or "4.21it/s").
_RATE_RE = re.compile(r"(\d+)/(\d+) \[[^\]\n]*?([\d.]+)\s*(s/it|it/s)\]")
_SEED_RE = re.compile(r"seed:?\s*(-?\d+)", re.IGNORECASE)

# Times outside this window are refused: pandas holds 1677-2262 only, and a date in the future
# would pin a row to the top of History and keep it "young" (polled every second) for ever.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # clocks differ; more than this ahead is a lie
MAX_SECONDS = 7 * 24 * 3600.0  # a run time longer than a week is not a run time
MAX_ERROR_CHARS = 4000
MAX_LOG_CHARS = 16_384  # the tail; progress and the store need far less
MAX_OUTPUTS = 16
MAX_URL_CHARS = 8192  # an http(s) link; data: URIs are bounded by the answer's size cap
MAX_INPUT_CHARS = 8 * 1024 * 1024  # an echoed input (it may hold data-URI images)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_model_id(value: object) -> bool:
    return isinstance(value, str) and _MODEL_RE.fullmatch(value) is not None


def parse_time(value: object) -> datetime | None:
    """ISO-8601 (with `Z` or an offset, any fraction) to an aware UTC datetime; None if unreadable
    or outside EARLIEST..LATEST (a year-9999 date would break every later read of the row)."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.11 accepts any fraction length, but not a missing offset: treat that as UTC.
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 with a positive offset overflows
        return None
    return parsed if EARLIEST <= parsed < LATEST else None


def as_output_list(output: object) -> list[str]:
    """The API gives null, one string or a list depending on the model: always a list here."""
    if output is None:
        return []
    if isinstance(output, str):
        return [output] if output else []
    if isinstance(output, (list, tuple)):
        return [item for item in output if isinstance(item, str) and item]
    return []


def progress_from_logs(logs: str) -> float | None:
    """Fraction done from the last tqdm-style line (" 50%|█████ | 2/4 [..."), or None."""
    if not logs:
        return None
    tail = logs[-2000:]
    steps = _STEPS_RE.findall(tail)
    percents = _PERCENT_RE.findall(tail)
    if steps:
        done, total = (int(n) for n in steps[-1])
        if total > 0:
            return min(done / total, 1.0)
    if percents:
        return min(int(percents[-1]) / 100, 1.0)
    return None


def run_estimate(logs: str) -> float | None:
    """Seconds the whole run should take, from the last tqdm line's step count and rate, or None."""
    found = _RATE_RE.findall(logs[-2000:]) if logs else []
    if not found:
        return None
    _done, total, rate, unit = found[-1]
    try:
        per_step = float(rate) if unit == "s/it" else 1.0 / float(rate)
    except (ValueError, ZeroDivisionError):
        return None
    return _seconds(int(total) * per_step)


def seed_of(model_input: dict[str, Any], logs: str) -> int | None:
    """The seed used: from the input if given, else from the model's "Using seed: N" log line."""
    seed = model_input.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    match = _SEED_RE.search(logs[:2000])
    return int(match.group(1)) if match else None


def _seconds(value: object) -> float | None:
    """A duration from the API: a finite, non-negative number of plausible size, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0.0 <= number <= MAX_SECONDS else None


def _text(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[:limit]
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Prediction:
    id: str
    model: str = ""
    status: str = STARTING
    input: dict[str, Any] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    error: str | None = None
    logs: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    data_removed: bool = False
    predict_time: float | None = None
    # What the answer held but could not be used (kept out of the fields above), for a note.
    problems: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object, *, now: datetime | None = None) -> Prediction:
        """Build from an API answer. Raises ValueError when there is no usable id; any other
        unusable value is dropped and named in `problems`."""
        if not isinstance(data, dict) or not is_valid_id(data.get("id")):
            raise ValueError("the answer is not a prediction (no valid id)")
        problems: list[str] = []
        latest = (now or datetime.now(UTC)) + FUTURE_SLACK

        status = data.get("status")
        if status in (None, ""):
            status = STARTING
        elif not (isinstance(status, str) and _STATUS_RE.fullmatch(status)):
            problems.append("an unreadable status")
            status = UNKNOWN

        model = data.get("model")
        if model not in (None, "") and not is_model_id(model):
            problems.append("an unreadable model name")
        model = model if is_model_id(model) else ""

        def time_of(name: str) -> datetime | None:
            value = data.get(name)
            parsed = parse_time(value)
            if value not in (None, "") and (parsed is None or parsed > latest):
                problems.append(f"an impossible {name}")
                return None
            return parsed

        raw_output = data.get("output")
        if raw_output is not None and not isinstance(raw_output, (str, list)):
            problems.append(f"an output of the wrong type ({type(raw_output).__name__})")
        output = as_output_list(raw_output)
        if len(output) > MAX_OUTPUTS or any(len(url) > MAX_URL_CHARS and url[:5].lower() != "data:"
                                            for url in output):
            problems.append("too many or too long output links")
            output = [url for url in output[:MAX_OUTPUTS] if len(url) <= MAX_URL_CHARS or url[:5].lower() == "data:"]

        error = data.get("error")
        error = None if error in (None, "") else _text(error, MAX_ERROR_CHARS)
        logs = data.get("logs")
        logs = logs[-MAX_LOG_CHARS:] if isinstance(logs, str) else ""

        model_input = data.get("input")
        if not isinstance(model_input, dict):
            model_input = {}
        elif len(json.dumps(model_input, default=str)) > MAX_INPUT_CHARS:
            problems.append("an echoed input too large to keep")
            model_input = {}

        metrics = data.get("metrics")
        raw_predict_time = metrics.get("predict_time") if isinstance(metrics, dict) else None
        predict_time = _seconds(raw_predict_time)
        if raw_predict_time is not None and predict_time is None:
            problems.append("an impossible predict_time")

        return cls(
            id=data["id"],
            model=model,
            status=status,
            input=model_input,
            output=output,
            error=error,
            logs=logs,
            created_at=time_of("created_at"),
            started_at=time_of("started_at"),
            completed_at=time_of("completed_at"),
            data_removed=data.get("data_removed") is True,
            predict_time=predict_time,
            problems=tuple(problems),
        )

    @property
    def is_terminal(self) -> bool:
        # The official SDKs forget `aborted` and spin forever; an error also ends it.
        return self.status in TERMINAL or self.error is not None

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def problem_note(self) -> str | None:
        """What to tell the user about values that were dropped, or None."""
        if not self.problems:
            return None
        return "CometAPI sent " + ", ".join(self.problems) + "; those values were ignored."

    @property
    def progress(self) -> float | None:
        if self.status == SUCCEEDED:
            return 1.0
        return progress_from_logs(self.logs)

    @property
    def expected_end(self) -> datetime | None:
        """When the run should end (upstream's clock), from its start and the logs' step rate."""
        estimate = run_estimate(self.logs) if self.status == PROCESSING else None
        if estimate is None or self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=estimate)

    @property
    def queue_time(self) -> float | None:
        """Seconds between creation and the start of the run."""
        if self.created_at and self.started_at:
            return max((self.started_at - self.created_at).total_seconds(), 0.0)
        return None

    @property
    def run_time(self) -> float | None:
        """Seconds the model ran: the API's predict_time, else started→completed."""
        if self.predict_time is not None:
            return self.predict_time
        if self.started_at and self.completed_at:
            return _seconds((self.completed_at - self.started_at).total_seconds())
        return None

    @property
    def seed(self) -> int | None:
        return seed_of(self.input, self.logs)

    @property
    def prompt(self) -> str:
        prompt = self.input.get("prompt")
        return prompt if isinstance(prompt, str) else ""
