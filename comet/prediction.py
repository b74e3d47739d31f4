"""A prediction as the API describes it, parsed once from JSON.

Tolerant by design: unknown fields are ignored, missing ones get neutral values, and an
unknown status is kept as-is (shown to the user, and polling goes on)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

STARTING, PROCESSING = "starting", "processing"
SUCCEEDED, FAILED, CANCELED, ABORTED = "succeeded", "failed", "canceled", "aborted"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, ABORTED})
KNOWN_STATUSES = (STARTING, PROCESSING, SUCCEEDED, FAILED, CANCELED, ABORTED)

# Replicate ids are 26 lower-case letters and digits; accept a little more (other providers,
# older ids) but nothing that could change a URL path: no slash, dot, percent or space.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{5,63}")
_PERCENT_RE = re.compile(r"(\d{1,3})%\|")
_STEPS_RE = re.compile(r"(\d+)/(\d+) \[")
_SEED_RE = re.compile(r"seed:?\s*(-?\d+)", re.IGNORECASE)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def parse_time(value: object) -> datetime | None:
    """ISO-8601 (with `Z` or an offset, any fraction) to an aware UTC datetime; None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.11 accepts any fraction length, but not a missing offset: treat that as UTC.
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


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


def seed_of(model_input: dict[str, Any], logs: str) -> int | None:
    """The seed used: from the input if given, else from the model's "Using seed: N" log line."""
    seed = model_input.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    match = _SEED_RE.search(logs[:2000])
    return int(match.group(1)) if match else None


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
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        """Build from an API answer. Raises ValueError when there is no usable id."""
        if not isinstance(data, dict) or not is_valid_id(data.get("id")):
            raise ValueError("the answer is not a prediction (no valid id)")
        status = data.get("status")
        error = data.get("error")
        metrics = data.get("metrics")
        model_input = data.get("input")
        return cls(
            id=data["id"],
            model=str(data.get("model") or ""),
            status=str(status) if status else STARTING,
            input=model_input if isinstance(model_input, dict) else {},
            output=as_output_list(data.get("output")),
            error=str(error) if error not in (None, "") else None,
            logs=data.get("logs") if isinstance(data.get("logs"), str) else "",
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            completed_at=parse_time(data.get("completed_at")),
            data_removed=bool(data.get("data_removed")),
            metrics=metrics if isinstance(metrics, dict) else {},
            raw=data,
        )

    @property
    def is_terminal(self) -> bool:
        # The official SDKs forget `aborted` and spin forever; an error also ends it.
        return self.status in TERMINAL or self.error is not None

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def progress(self) -> float | None:
        if self.status == SUCCEEDED:
            return 1.0
        return progress_from_logs(self.logs)

    @property
    def queue_time(self) -> float | None:
        """Seconds between creation and the start of the run."""
        if self.created_at and self.started_at:
            return max((self.started_at - self.created_at).total_seconds(), 0.0)
        return None

    @property
    def run_time(self) -> float | None:
        """Seconds the model ran: the API's predict_time, else started→completed."""
        predict_time = self.metrics.get("predict_time")
        if isinstance(predict_time, (int, float)) and not isinstance(predict_time, bool):
            return float(predict_time)
        if self.started_at and self.completed_at:
            return max((self.completed_at - self.started_at).total_seconds(), 0.0)
        return None

    @property
    def seed(self) -> int | None:
        return seed_of(self.input, self.logs)

    @property
    def prompt(self) -> str:
        prompt = self.input.get("prompt")
        return prompt if isinstance(prompt, str) else ""
