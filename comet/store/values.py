"""Values in and out of the database. Anything the upstream sent may be stored, and older
releases stored it unchecked: writes fit text to what both databases take, and reads turn what no
view can show into "unknown" (None / NaT / NaN), so one bad row shows as bad and the others as usual.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pandas as pd

# Times outside this window are unknown (None / NaT): pandas cannot hold years past 2262, and no
# prediction was made before 2000 or will be after 2100.
EARLIEST_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z
LATEST_EPOCH = 4_102_444_800.0  # 2100-01-01T00:00:00Z


def storable(text: str | None, limit: int | None = None) -> str | None:
    """Text as both databases take it: cut to `limit` characters (its column's width), without
    NUL (PostgreSQL refuses it) or lone surrogates (not UTF-8: neither driver can send them)."""
    if text is None:
        return None
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def clipped(value: object, limit: int) -> str | None:
    """Stored text cut to `limit` characters for showing (an ellipsis says it was cut)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None  # pandas 3 reads NULL in a text column as NaN: not the text "nan"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def json_value(text: object, kind: type) -> Any:
    """A stored JSON column as `kind` (dict or list); an empty one if unreadable or of another kind."""
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError, RecursionError):
        return kind()
    return value if isinstance(value, kind) else kind()


def count(value: object) -> int:
    try:
        return max(int(value), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def index(value: object) -> int | None:
    """A stored position (an output's idx): a whole number from 0, else unknown."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        found = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return found if found >= 0 and found == value else None


def number(value: object) -> float | None:
    """A stored number as a finite float, or None (NULL, NaN, infinite, text)."""
    if isinstance(value, bool):
        return None
    try:
        found = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return found if math.isfinite(found) else None


def duration(value: object) -> float | None:
    """A run time in seconds: finite and not negative, else unknown."""
    found = number(value)
    return found if found is not None and found >= 0 else None


def epoch_seconds(value: object) -> float | None:
    """Epoch seconds inside EARLIEST_EPOCH..LATEST_EPOCH, else None."""
    found = number(value)
    return found if found is not None and EARLIEST_EPOCH <= found < LATEST_EPOCH else None


def epoch(moment: datetime | None) -> float | None:
    return epoch_seconds(moment.timestamp()) if moment else None


def utc_datetime(seconds: object) -> datetime | None:
    """A stored time as an aware UTC datetime; None when unknown or outside the window."""
    seconds = epoch_seconds(seconds)
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def datetimes(column: pd.Series) -> pd.Series:
    """A column of stored times as datetimes; NaT where a value is unknown or outside the window
    (pandas would raise OutOfBoundsDatetime for year 9999, and fail the whole page or export)."""
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    numbers = numbers.where((numbers >= EARLIEST_EPOCH) & (numbers < LATEST_EPOCH))
    return pd.to_datetime(numbers, unit="s", utc=True)


def durations(column: pd.Series) -> pd.Series:
    """A column of run times as floats; NaN where a value is unknown, infinite or negative."""
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    return numbers.where(numbers.between(0, math.inf, inclusive="left"))
