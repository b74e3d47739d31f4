"""The process's secrets (the server key and every visitor key a client was made with), and
scrubbing them out of whatever the upstream controls before it is stored, shown or logged.

An upstream may echo the Bearer header back in an error, its logs or a request id, and a hostile
one may keep a visitor's key and echo it in answers about other predictions: so every key this
process has used is scrubbed from every upstream answer, not just the key of the call."""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote

MASK = "***"
MIN_LENGTH = 8  # shorter "secrets" would mangle ordinary text and protect nothing

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(secret: str) -> None:
    """Remember a key for scrubbing (kept in memory only, never written anywhere)."""
    global _secrets
    if not isinstance(secret, str) or len(secret) < MIN_LENGTH:
        return
    forms = {secret, quote(secret, safe="")}  # also as it would appear inside a URL
    with _lock:
        # Longest first, so a key that contains another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


def secrets() -> tuple[str, ...]:
    return _secrets


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_json(value: Any) -> Any:
    """A decoded JSON value with every string (keys included) scrubbed."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_json(item) for item in value]
    if isinstance(value, dict):
        return {scrub(str(key)): scrub_json(item) for key, item in value.items()}
    return value


class _ScrubFilter(logging.Filter):
    """Masks secrets in a record's message before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: leave it to the handler to report
                return True
            record.msg, record.args = scrub(message), None
            if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = _ScrubFilter()


def logger(name: str) -> logging.Logger:
    """A logger whose records never carry a registered secret (a filter on a logger applies to
    that logger's own records only, so each module's logger gets it)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
