"""Listing and export: the History page's table, its count and filters, and the CSV export, all
filtered, ordered (newest first) and paged in SQL, with one filter object shared by all three.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from ..images import THUMBNAIL_TYPE
from ..prediction import is_valid_id
from . import values as v
from .db import Database
from .schema import outputs, predictions

PAGE_COLUMNS = ["id", "model", "status", "prompt", "created", "run_time", "creator", "outputs", "parent_id",
                "batch_id", "thumbnail"]
# Longest text per cell of the History page's table (what every page load ships to the browser);
# the detail view and the CSV have the rest.
PAGE_TEXT_CHARS = {"id": 64, "model": 64, "status": 64, "prompt": 300, "creator": 100, "parent_id": 64,
                   "batch_id": 32}
# How far a chain is followed from one prediction, up (parents) and down (children): deep enough
# for any chain of edits a person makes, and a bound on a cycle an odd row could make.
CHAIN_DEPTH = 50
CHAIN_CHILDREN = 50  # children listed in a lineage (a chain filter has them all)


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
    batch: str | None = None  # sent by this batch
    # The chain through this prediction: it, its ancestors (the image it edited, and so on up)
    # and its descendants (every edit of its images, and so on down), CHAIN_DEPTH each way.
    # Not its siblings: another edit of the same parent is another chain.
    chain: str | None = None

    def __post_init__(self) -> None:
        # Normalised once, so two filters that select the same rows compare (and hash) equal:
        # lists become tuples, a lone string is one value (not its characters), blank text is none.
        object.__setattr__(self, "statuses", _names(self.statuses))
        object.__setattr__(self, "models", _names(self.models))
        object.__setattr__(self, "text", (self.text or "").strip() or None)
        object.__setattr__(self, "creator", self.creator or None)
        object.__setattr__(self, "batch", self.batch or None)
        object.__setattr__(self, "chain", self.chain or None)

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
        if self.batch:
            clauses.append(p.batch_id == self.batch)
        if self.chain:
            clauses.append(p.id.in_(_chain_ids(self.chain)))
        return clauses


def _chain_ids(prediction_id: str) -> sa.Select:
    """The ids of the chain through `prediction_id` (HistoryFilter.chain): two recursive walks,
    up by id and down by the parent index, each CHAIN_DEPTH steps at most, so a cycle ends."""
    p = predictions.c
    zero = sa.literal_column("0", sa.Integer).label("depth")  # inline: a bound 0 may arrive as smallint
    up = sa.select(p.id, p.parent_id, zero).where(p.id == prediction_id).cte("chain_up", recursive=True)
    parent = predictions.alias("chain_parent").c
    up = up.union_all(sa.select(parent.id, parent.parent_id, up.c.depth + 1)
                      .where(parent.id == up.c.parent_id, up.c.depth < CHAIN_DEPTH))
    down = sa.select(p.id, zero).where(p.id == prediction_id).cte("chain_down", recursive=True)
    child = predictions.alias("chain_child").c
    down = down.union_all(sa.select(child.id, down.c.depth + 1)
                          .where(child.parent_id == down.c.id, down.c.depth < CHAIN_DEPTH))
    return sa.union(sa.select(up.c.id), sa.select(down.c.id))


@dataclass(frozen=True)
class ChainLink:
    """One prediction of a chain, as the detail view shows it: what it is, and which of its images
    are stored (for a thumbnail). No input: an edit's input holds an inline image."""

    id: str
    model: str
    status: str
    prompt: str
    created_at: datetime | None
    parent_id: str | None
    parent_output: int | None
    outputs: tuple[int, ...]  # idx of each stored output


@dataclass(frozen=True)
class Lineage:
    ancestors: list[ChainLink]  # oldest first, ending with the parent
    children: list[ChainLink]  # oldest first, CHAIN_CHILDREN at most
    cut: bool = False  # the walk up stopped at CHAIN_DEPTH or at a cycle: older ones are not listed


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
                      p.run_time, shortened["creator"], p.output_count, shortened["parent_id"], shortened["batch_id"])
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
        # object dtype keeps None for "none" (pandas would turn it into NaN in a str column)
        frame["parent_id"] = pd.Series([row.parent_id if is_valid_id(row.parent_id) else None for row in rows],
                                       dtype=object)
        frame["batch_id"] = pd.Series([v.clipped(row.batch_id, PAGE_TEXT_CHARS["batch_id"]) for row in rows],
                                      dtype=object)
        frame["created"] = v.datetimes(frame["created"])
        frame["run_time"] = v.durations(frame["run_time"])
        frame["thumbnail"] = pd.Series([thumbnails.get(row.id) for row in rows], dtype=object)
        return frame

    def count(self, filter: HistoryFilter = ALL) -> int:
        query = sa.select(sa.func.count()).select_from(predictions).where(*filter.where())
        return self._read(lambda conn: conn.scalar(query))

    def stored_sizes(self, prediction_ids: Iterable[str]) -> dict[str, int]:
        """Bytes of the full images still stored for each of these predictions (one query): what
        they weigh in a ZIP. Ids with none are left out."""
        ids = list(dict.fromkeys(prediction_ids))
        if not ids:
            return {}
        o = outputs.c
        query = (sa.select(o.prediction_id, sa.func.sum(o.size)).where(o.prediction_id.in_(ids), o.pruned_at.is_(None))
                 .group_by(o.prediction_id))
        return self._read(lambda conn: {pid: int(size) for pid, size in conn.execute(query)})

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
                   p.completed_at, p.run_time, p.creator, p.parent_id, p.parent_output, p.batch_id,
                   p.output_count, p.output_urls, p.data_removed, p.tracking, p.note]
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
        # A whole number or empty (pandas would make the column float, 1.0, once one is missing).
        frame["parent_output"] = pd.Series([v.index(value) for value in frame["parent_output"]], dtype="Int64")
        return frame

    def lineage(self, prediction_id: str, *, depth: int = CHAIN_DEPTH, children: int = CHAIN_CHILDREN) -> Lineage:
        """The chain around a prediction: its ancestors, oldest first (the image it edited, the
        one that edited, ...), up to `depth` of them, stopping at one not in the history or at a
        cycle; and its direct children, oldest first, `children` at most."""
        p, o = predictions.c, outputs.c
        columns = (p.id, p.model, p.status, sa.func.substr(p.prompt, 1, PAGE_TEXT_CHARS["prompt"] + 1).label("prompt"),
                   p.created_at, p.parent_id, p.parent_output)

        def links(conn: sa.Connection, rows: list[sa.Row]) -> list[ChainLink]:
            stored: dict[str, list[int]] = {row.id: [] for row in rows}
            if stored:
                for out in conn.execute(sa.select(o.prediction_id, o.idx)
                                        .where(o.prediction_id.in_(list(stored))).order_by(o.idx)):
                    stored[out.prediction_id].append(out.idx)
            return [ChainLink(
                id=row.id, model=v.clipped(row.model, PAGE_TEXT_CHARS["model"]) or "",
                status=v.clipped(row.status, PAGE_TEXT_CHARS["status"]) or "",
                prompt=v.clipped(row.prompt, PAGE_TEXT_CHARS["prompt"]) or "",
                created_at=v.utc_datetime(row.created_at),
                parent_id=row.parent_id if is_valid_id(row.parent_id) else None,
                parent_output=v.index(row.parent_output), outputs=tuple(stored[row.id])) for row in rows]

        def read(conn: sa.Connection) -> Lineage:
            seen, up, cut = {prediction_id}, [], False
            wanted = conn.scalar(sa.select(p.parent_id).where(p.id == prediction_id))
            while is_valid_id(wanted):
                if wanted in seen or len(up) >= depth:
                    cut = True
                    break
                row = conn.execute(sa.select(*columns).where(p.id == wanted)).first()
                if row is None:  # edited from a prediction this history does not hold
                    break
                seen.add(row.id)
                up.append(row)
                wanted = row.parent_id
            down = conn.execute(sa.select(*columns).where(p.parent_id == prediction_id, p.id != prediction_id)
                                .order_by(p.created_at, p.id).limit(children)).all()
            return Lineage(ancestors=links(conn, up[::-1]), children=links(conn, down), cut=cut)

        return self._read(read)


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
