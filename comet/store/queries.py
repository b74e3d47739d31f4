"""Listing and export: the History page's table, its count and filters, and the CSV export, all
filtered, ordered (newest first) and paged in SQL, with one filter object shared by all three.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from ..images import THUMBNAIL_TYPE
from . import values as v
from .db import Database
from .schema import outputs, predictions

PAGE_COLUMNS = ["id", "model", "status", "prompt", "created", "run_time", "creator", "outputs", "thumbnail"]
# Longest text per cell of the History page's table (what every page load ships to the browser);
# the detail view and the CSV have the rest.
PAGE_TEXT_CHARS = {"id": 64, "model": 64, "status": 64, "prompt": 300, "creator": 100}


def _names(chosen: Iterable[str] | str | None) -> tuple[str, ...]:
    if chosen is None:
        return ()
    return (chosen,) if isinstance(chosen, str) else tuple(chosen)


@dataclass(frozen=True)
class HistoryFilter:
    """Which predictions a listing, count or export covers; a field left empty means "any"."""

    statuses: tuple[str, ...] = ()  # any of these statuses
    models: tuple[str, ...] = ()  # any of these model ids
    text: str | None = None  # the prompt contains it: any case, % and _ taken literally
    creator: str | None = None  # recorded for exactly this creator

    def __post_init__(self) -> None:
        # Normalised once, so two filters that select the same rows compare (and hash) equal:
        # lists become tuples, a lone string is one value (not its characters), blank text is none.
        object.__setattr__(self, "statuses", _names(self.statuses))
        object.__setattr__(self, "models", _names(self.models))
        object.__setattr__(self, "text", (self.text or "").strip() or None)
        object.__setattr__(self, "creator", self.creator or None)

    @property
    def matches_all(self) -> bool:
        return self == HistoryFilter()

    def where(self) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses (none for a filter that matches all)."""
        p = predictions.c
        clauses = []
        if self.statuses:
            clauses.append(p.status.in_(self.statuses))
        if self.models:
            clauses.append(p.model.in_(self.models))
        if self.text:
            # Case-insensitive substring; autoescape makes % and _ in the text match literally.
            clauses.append(p.prompt.icontains(self.text, autoescape=True))
        if self.creator:
            clauses.append(p.creator == self.creator)
        return clauses


ALL = HistoryFilter()



class Queries(Database):
    """Reads for the History page and its exports."""

    def page(self, filter: HistoryFilter = ALL, *, limit: int = 50, offset: int = 0) -> pd.DataFrame:
        """One page of history, newest first, filtered and paged in SQL; columns PAGE_COLUMNS.
        `thumbnail` is a data: URI of the first output's thumbnail, or None."""
        p = predictions.c
        # Long text is cut in SQL (one character more than shown, to know it was cut): a row
        # holding a megabyte of status must not make every page load ship it.
        shortened = {name: sa.func.substr(p[name], 1, chars + 1).label(name) for name, chars in PAGE_TEXT_CHARS.items()}
        query = (
            sa.select(shortened["id"], shortened["model"], shortened["status"], shortened["prompt"], p.created_at,
                      p.run_time, shortened["creator"], p.output_count)
            .where(*filter.where())
            .order_by(p.created_at.desc(), p.id.desc())
            .limit(limit)
            .offset(offset)
        )

        def read(conn: sa.Connection) -> tuple[list[sa.Row], dict[str, str]]:
            rows = conn.execute(query).all()
            return rows, _first_thumbnails(conn, [row.id for row in rows])

        rows, thumbnails = self._read(read)
        frame = pd.DataFrame([tuple(row) for row in rows], columns=PAGE_COLUMNS[:-1])
        for name, chars in PAGE_TEXT_CHARS.items():
            frame[name] = frame[name].map(lambda value, chars=chars: v.clipped(value, chars))
        frame["created"] = v.datetimes(frame["created"])
        frame["run_time"] = v.durations(frame["run_time"])
        # object dtype keeps None for "no thumbnail" (pandas would turn it into NaN in a str column)
        frame["thumbnail"] = pd.Series([thumbnails.get(row.id) for row in rows], dtype=object)
        return frame

    def count(self, filter: HistoryFilter = ALL) -> int:
        query = sa.select(sa.func.count()).select_from(predictions).where(*filter.where())
        return self._read(lambda conn: conn.scalar(query))

    def models(self) -> list[str]:
        """Models present in history, sorted. Read on every History page build, so it hops
        through the model index from one model to the next (a handful of index seeks) instead of
        reading every row as SELECT DISTINCT would."""
        return self._read(lambda conn: list(conn.scalars(_MODELS_QUERY)))

    def export_rows(self, filter: HistoryFilter = ALL) -> pd.DataFrame:
        """Every matching prediction, newest first, for a CSV: no paging, no image bytes.
        `stored_outputs` lists each stored output as (idx, content_type), in idx order."""
        p, o = predictions.c, outputs.c
        columns = [p.id, p.model, p.status, p.prompt, p.input, p.error, p.created_at, p.started_at,
                   p.completed_at, p.run_time, p.creator, p.output_count, p.output_urls, p.data_removed,
                   p.tracking, p.note]
        where = filter.where()
        query = sa.select(*columns).where(*where).order_by(p.created_at.desc(), p.id.desc())
        # The outputs' types, in the same transaction (the CSV names the files the ZIP holds).
        kinds = (sa.select(o.prediction_id, o.idx, o.content_type)
                 .join_from(outputs, predictions, o.prediction_id == p.id).where(*where).order_by(o.idx))

        def read(conn: sa.Connection) -> tuple[list[sa.Row], dict[str, list[tuple[int, str]]]]:
            stored: dict[str, list[tuple[int, str]]] = {}
            for out in conn.execute(kinds):
                stored.setdefault(out.prediction_id, []).append((out.idx, out.content_type))
            return conn.execute(query).all(), stored

        rows, stored = self._read(read)
        frame = pd.DataFrame([tuple(row) for row in rows], columns=[c.name for c in columns])
        frame["stored_outputs"] = pd.Series([stored.get(row.id, []) for row in rows], dtype=object)
        for name in ("created_at", "started_at", "completed_at"):
            frame[name] = v.datetimes(frame[name])
        frame["run_time"] = v.durations(frame["run_time"])
        return frame


def _distinct_models() -> sa.Select:
    """WITH RECURSIVE m: the smallest model name, then repeatedly the next larger one."""
    p, later = predictions.c, predictions.alias("later").c
    first = sa.select(sa.func.min(p.model).label("model")).where(p.model > "")
    hops = first.cte("models_present", recursive=True)
    following = sa.select(sa.func.min(later.model)).where(later.model > hops.c.model).scalar_subquery()
    hops = hops.union_all(sa.select(following).where(hops.c.model.is_not(None)))
    return sa.select(hops.c.model).where(hops.c.model.is_not(None)).order_by(hops.c.model)


_MODELS_QUERY = _distinct_models()


def _first_thumbnails(conn: sa.Connection, ids: list[str]) -> dict[str, str]:
    """data: URIs of the first output's thumbnail, for just these ids (one page)."""
    if not ids:
        return {}
    o = outputs.c
    rows = conn.execute(sa.select(o.prediction_id, o.thumbnail)
                        .where(o.prediction_id.in_(ids), o.idx == 0, o.thumbnail.is_not(None)))
    return {row.prediction_id: f"data:{THUMBNAIL_TYPE};base64,{base64.b64encode(row.thumbnail).decode()}"
            for row in rows}
