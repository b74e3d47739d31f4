"""Removing a leaked API key from history: an upstream that echoed the Bearer key into its error,
logs or request id got it stored by older releases."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

from .db import Database
from .schema import outputs, predictions

MIN_SECRET_CHARS = 8  # shorter "secrets" would match ordinary text
SCRUBBED = "***"
# Every text column an upstream answer (or a visitor) can fill: where a leaked key could sit.
_SECRET_COLUMNS = ("model", "status", "input", "prompt", "error", "logs_tail", "note", "output_urls", "creator")
_log = logging.getLogger(__name__)


class Scrub(Database):
    def scrub_secrets(self, secrets: Iterable[str]) -> int:
        """Replace every occurrence of each secret (an API key) with "***" wherever history keeps
        upstream or visitor text. Secrets shorter than MIN_SECRET_CHARS are ignored (they would
        match ordinary text). One UPDATE per table, touching only rows that hold a secret;
        returns how many rows changed."""
        # Longest first, so a secret that contains another is replaced whole.
        found = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS},
                       key=len, reverse=True)
        if not found:
            return 0

        def scrubbed(column: sa.ColumnElement) -> sa.ColumnElement:
            for secret in found:
                column = sa.func.replace(column, secret, SCRUBBED)
            return column

        def scrub(conn: sa.Connection, table: sa.Table, names: Iterable[str]) -> int:
            columns = [table.c[name] for name in names]
            query = (
                sa.update(table)
                # LIKE finds the candidates (autoescape: % and _ in a key match literally) ...
                .where(sa.or_(*(c.contains(s, autoescape=True) for c in columns for s in found)))
                # ... and this leaves out rows SQLite's case-insensitive LIKE matched but
                # replace() (case-sensitive) would not change, so they are neither written nor counted.
                .where(sa.or_(*(scrubbed(c) != c for c in columns)))
                .values({c.name: scrubbed(c) for c in columns})
            )
            return conn.execute(query).rowcount

        changed = self._write(lambda conn: scrub(conn, predictions, _SECRET_COLUMNS)
                              + scrub(conn, outputs, ["source_url"]))
        if changed:
            _log.warning("removed a leaked API key from %d history rows", changed)
        return changed
