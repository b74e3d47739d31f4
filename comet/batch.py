"""Batches: a list of prompts, several seeds each, one or several models and up to two swept
parameters, planned into cells and sent by the server, never by a browser session.

Planning (`plan`) is pure: a `BatchSpec` becomes a `BatchPlan` whose cells hold exactly what each
create will send, its fixed seed included, so any cell can be reproduced; each model gets the
user's own choices and its own defaults for the rest (`catalog.compose`, the Create page's compare
rules). Nonsense is refused with a message: too many predictions, no prompt, empty, duplicate or
out-of-range sweep values, a swept parameter a chosen model does not take.

A submitted batch is durable: a `batches` row and its `batch_cells`, beside the history in the
same database (own metadata, created idempotently like the ledger's `spend`). `BatchRunner` (one
per server process, like the tracker) sends the cells:
- a cell is claimed with a lease and marked `sending` in one committed transaction BEFORE its
  POST, at most `concurrency` creates in flight for the whole app (the claim counts every
  unexpired `sending` lease, other replicas' included, under a lock);
- each create first reserves its estimated cost (comet.ledger); a refusal marks this cell and
  every cell of the batch not yet sent `refused`, with the limit's message;
- a 429 (or a connection that never reached the server) was certainly not accepted: the cell
  goes back to `pending` and is tried again later; new creates pause for the Retry-After
  (capped), or a doubling backoff without one;
- `CreateUncertain` (and a `sending` cell whose process died: its lease ran out) becomes
  `uncertain`: it may have been accepted and billed, so it is never sent again by itself.
A clean `stop()` sends nothing new and waits for the creates in flight, so an orderly restart
leaves no cell uncertain; a restart resumes the pending cells. Cell states:

    pending -> sending -> sent | failed | refused | canceled | uncertain
                       -> pending (a 429, an unreachable API, a stop: it was not sent)
    pending -> canceled | refused (the batch was canceled, or a spending limit refused it)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from . import catalog, errors, prices, redact
from .ledger import Limits, Refusal
from .prediction import TERMINAL, Prediction
from .store import HistoryError

log = redact.logger("comet.batch")

DEFAULT_MAX = 200  # predictions per batch (COMET_BATCH_MAX)
DEFAULT_CONCURRENCY = 4  # creates in flight (COMET_BATCH_CONCURRENCY)
MAX_AXES = 2
SEED_SPAN = 2**32  # seeds are 0 .. 2**32 - 1, as the form's
MAX_STORED_BYTES = 16 * 1024 * 1024  # the cells' inputs together: uploads belong behind a URL
LABEL_CHARS = 80
MESSAGE_CHARS = 1000
CSV_MAX_ROWS = 5000

# Cell states.
PENDING, SENDING, SENT = "pending", "sending", "sent"
FAILED, REFUSED, CANCELED, UNCERTAIN = "failed", "refused", "canceled", "uncertain"
UNSENT = (PENDING, SENDING)
# Batch states.
RUNNING, FINISHED = "running", "finished"  # and CANCELED

DEAD_SENDER_NOTE = ("The server stopped while sending this one; it may have been accepted (and billed), "
                    "so it was not sent again.")
CANCELED_NOTE = "Canceled before it was sent."
_LOCK = 0x6261746368  # pg_advisory_xact_lock key for claims and table creation ("batch")

Estimator = Callable[[str, Mapping[str, Any]], "prices.Estimate | None"]


# ---- tables ---------------------------------------------------------------------------------

batch_metadata = sa.MetaData()
batch_table = sa.Table(
    "batches",
    batch_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),  # epoch seconds
    sa.Column("creator", sa.String(200)),
    sa.Column("title", sa.String(200), nullable=False, default=""),
    sa.Column("state", sa.String(16), nullable=False),  # RUNNING, CANCELED or FINISHED
    sa.Column("spec", sa.Text, nullable=False),  # JSON: what the user asked for (BatchSpec)
    sa.Column("cells", sa.Integer, nullable=False),
    sa.Column("estimated_usd", sa.Float),  # None: some model has no price
    sa.Column("stop_note", sa.Text),  # why the unsent cells were stopped (a spending limit)
    sa.Column("finished_at", sa.Float),  # when no cell was left to send
)
sa.Index("ix_batches_created", batch_table.c.created_at)

cell_table = sa.Table(
    "batch_cells",
    batch_metadata,
    sa.Column("batch_id", sa.String(32), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),  # sending order: row by row
    sa.Column("created_at", sa.Float, nullable=False),  # the batch's: older batches go first
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("col", sa.Integer, nullable=False),
    sa.Column("row_label", sa.String(300), nullable=False),
    sa.Column("col_label", sa.String(300), nullable=False),
    sa.Column("prompt_index", sa.Integer, nullable=False),
    sa.Column("variation", sa.Integer, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("input", sa.Text, nullable=False),  # JSON: exactly what is sent, seed included
    sa.Column("seed", sa.BigInteger),
    sa.Column("sweep", sa.Text, nullable=False),  # JSON: {parameter: value} of the swept axes
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("prediction_id", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("reservation", sa.String(32)),  # the ledger's row while it is being sent
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # creates answered 429 / unreachable
    sa.Column("not_before", sa.Float, nullable=False, default=0.0),  # a retried cell waits until then
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", sa.Float),
    sa.Column("sent_at", sa.Float),
)
# The runner's claim (pending, oldest batch first) and its count of creates in flight.
sa.Index("ix_batch_cells_claim", cell_table.c.state, cell_table.c.created_at, cell_table.c.batch_id,
         cell_table.c.idx)
sa.Index("ix_batch_cells_lease", cell_table.c.state, cell_table.c.lease_until)
# A batch's counts; the primary key lists its cells in order.
sa.Index("ix_batch_cells_batch_state", cell_table.c.batch_id, cell_table.c.state)
sa.Index("ix_batch_cells_prediction", cell_table.c.prediction_id)

_predictions = sa.table("predictions", sa.column("id"), sa.column("status"), sa.column("batch_id"))


# ---- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One swept parameter and its values, in the order given."""

    param: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class BatchSpec:
    """What the user asked for. `prompts`: one entry per row, a prompt string or a mapping of
    model inputs (a CSV row, `rows_from_csv`) holding at least "prompt"; a "seed" there is the
    row's first seed. `base`: the user's own choices for every cell (compare rules apply per
    model). `images` go into each model's own image field (`image_field`: where they came from).
    `seed`: the first seed (variation v sends seed + v); None derives it from the spec, so the
    same spec gives the same seeds: pass `random_seed()` for new images."""

    prompts: tuple[str | Mapping[str, Any], ...]
    models: tuple[str, ...]
    variations: int = 1
    base: Mapping[str, Any] = field(default_factory=dict, hash=False)
    axes: tuple[Axis, ...] = ()
    seed: int | None = None
    title: str = ""
    images: tuple[str, ...] = ()
    image_field: str | None = None


@dataclass(frozen=True)
class PlannedCell:
    idx: int
    row: int  # rows: prompt x second axis value
    col: int  # columns: model x first axis value x variation
    row_label: str
    col_label: str
    prompt_index: int
    variation: int
    model: str
    input: dict[str, Any]
    seed: int | None
    sweep: dict[str, Any]


@dataclass(frozen=True)
class BatchPlan:
    spec: BatchSpec
    count: int  # predictions the spec asks for (also when refused)
    cells: tuple[PlannedCell, ...] = ()
    problems: tuple[str, ...] = ()  # any: nothing may be sent
    notes: tuple[str, ...] = ()  # what happened to the user's choices per model (compare rules)
    estimated_usd: float | None = None  # None: a model without a price, or refused
    rows: tuple[str, ...] = ()  # row labels, by row index
    columns: tuple[str, ...] = ()  # column labels, by column index
    first_seed: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.cells)


def catalog_prices() -> Estimator:
    """Estimates from the catalog's prices alone (the app passes Connection.estimate, which
    knows the operator's [prices])."""
    rules = prices.rules()
    return lambda model_id, model_input: prices.estimate(model_id, model_input, rules)


def random_seed() -> int:
    """A first seed for a new batch (the page keeps one per draft, so its preview holds still)."""
    return int.from_bytes(os.urandom(4), "big")


def prompts_from_text(text: str) -> list[str]:
    """The Prompts text area: one prompt per line, blank lines ignored."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def rows_from_csv(data: str | bytes, model_ids: Sequence[str], *, max_rows: int = CSV_MAX_ROWS
                  ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of model inputs from a CSV with a header: a `prompt` column and any other parameters
    of the chosen models (headers matched case-insensitively, spaces as underscores). Values are
    read as each parameter's type; an empty cell is not set. Returns (rows, problems)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return [], ["The CSV file is not UTF-8 text."]
    reader = csv.reader(io.StringIO(data.lstrip("\ufeff")))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return [], ["The CSV file is empty: its first line must name the columns (at least prompt)."]
    names = [cell.strip().lower().replace(" ", "_") for cell in header]
    params = _params_of(model_ids)
    problems: list[str] = []
    if "prompt" not in names:
        problems.append("The CSV file has no prompt column.")
    unknown = [n for n in names if n and n not in params]
    if unknown:
        problems.append(f"Column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                        f"{'are not parameters' if len(unknown) > 1 else 'is not a parameter'} of the chosen "
                        f"models (known: {', '.join(sorted(params))}).")
    if len(set(names)) != len(names):
        problems.append("The CSV file names a column twice.")
    if problems:
        return [], problems
    rows: list[dict[str, Any]] = []
    try:
        for line, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) >= max_rows:
                return [], [f"The CSV file has more than {max_rows:,} rows."]
            row: dict[str, Any] = {}
            for name, raw in zip(names, cells):
                if not name or not raw.strip():
                    continue
                value, problem = _coerce(params[name], raw)
                if problem:
                    problems.append(f"Row {line}: {problem}")
                else:
                    row[name] = value
            if not str(row.get("prompt", "")).strip():
                problems.append(f"Row {line} has no prompt.")
            rows.append(row)
    except csv.Error as exc:
        return [], [f"The CSV file cannot be read: {exc}."]
    return rows, problems


def plan(spec: BatchSpec, *, max_cells: int = DEFAULT_MAX, estimate: Estimator | None = None) -> BatchPlan:
    """The cells `spec` asks for, each with its exact input, or why none may be sent.
    `estimate`: the Connection's (its price rules); by default the catalog's prices."""
    estimate = estimate or catalog_prices()
    problems: list[str] = []
    models = list(dict.fromkeys(spec.models))
    unknown = [m for m in models if m not in catalog.MODELS]
    if not models:
        problems.append("Choose at least one model.")
    if unknown:
        problems.append(f"Unknown model{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}.")
    rows = [{"prompt": p} if isinstance(p, str) else dict(p) for p in spec.prompts]
    if not rows:
        problems.append("Add at least one prompt.")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            problems.append(f"Prompt {number} is empty.")
    variations = spec.variations
    if not isinstance(variations, int) or isinstance(variations, bool) or variations < 1:
        problems.append(f"Variations per prompt must be a whole number of at least 1 (got {variations!r}).")
        variations = 1
    known = [m for m in models if m in catalog.MODELS]
    axes = _checked_axes(spec, known, problems) if known else []
    count = len(rows) * variations * len(models) * math.prod(len(a.values) for a in axes)
    if count > max_cells:
        problems.append(f"{count:,} predictions is more than the maximum of {max_cells:,} per batch: "
                        "use fewer prompts, variations, models or values.")
    if problems:
        return BatchPlan(spec, count, problems=tuple(problems))
    return _cells(spec, rows, models, variations, axes, count, estimate)


def _checked_axes(spec: BatchSpec, models: list[str], problems: list[str]) -> list[Axis]:
    """The axes with their values read as the parameter's type; problems added for the rest."""
    if len(spec.axes) > MAX_AXES:
        problems.append(f"Sweep at most {MAX_AXES} parameters.")
        return []
    names = [axis.param for axis in spec.axes]
    if len(set(names)) != len(names):
        problems.append("Sweep a parameter on one axis only.")
        return []
    checked = []
    for axis in spec.axes:
        label = _label(axis.param)
        if axis.param == "prompt":
            problems.append("The prompts are the rows already: sweep another parameter.")
            continue
        if axis.param == "seed":
            problems.append("Seeds come from Variations per prompt: sweep another parameter.")
            continue
        missing = [catalog.MODELS[m].title for m in models if catalog.MODELS[m].param(axis.param) is None]
        if missing:
            problems.append(f"{label} is not a parameter of {', '.join(missing)}: choose models that all take "
                            "it, or sweep another parameter.")
            continue
        params = [catalog.MODELS[m].param(axis.param) for m in models]
        if params[0].type in ("image", "images"):
            problems.append(f"{label} cannot be swept: it is an image.")
            continue
        if not axis.values:
            problems.append(f"Give at least one value for {label}.")
            continue
        values, bad = [], False
        for raw in axis.values:
            value, problem = _coerce(params[0], raw)
            if problem:
                problems.append(problem)
                bad = True
                continue
            for model_id, param in zip(models, params):
                has_image = bool(spec.images) and catalog.MODELS[model_id].takes_images
                if refused := catalog.refusal(param, value, has_image):
                    problems.append(f"{catalog.MODELS[model_id].title}: {refused.message}")
                    bad = True
            values.append(value)
        if len({_same(v) for v in values}) != len(values):
            problems.append(f"The values of {label} repeat one another: each value once.")
            bad = True
        if not bad:
            checked.append(Axis(axis.param, tuple(values)))
    return checked


def _cells(spec: BatchSpec, rows: list[dict[str, Any]], models: list[str], variations: int,
           axes: list[Axis], count: int, estimate: Estimator) -> BatchPlan:
    given = spec.seed if spec.seed is not None else spec.base.get("seed")  # the form's fixed seed
    first_seed = given if _is_seed(given) else _derived_seed(spec)
    across = axes[0] if axes else None
    down = axes[1] if len(axes) > 1 else None
    across_values = across.values if across else (None,)
    down_values = down.values if down else (None,)
    problems: list[str] = []
    notes: list[str] = []
    cells: list[PlannedCell] = []
    estimates: list[prices.Estimate | None] = []
    row_labels: dict[int, str] = {}
    col_labels: dict[int, str] = {}
    stored = 0
    for p_i, row in enumerate(rows):
        row_seed = row.pop("seed", None)
        start = row_seed if _is_seed(row_seed) else first_seed
        for d_i, down_value in enumerate(down_values):
            row_index = p_i * len(down_values) + d_i
            row_labels[row_index] = " · ".join(filter(None, (
                _short(row["prompt"]), _axis_text(down, down_value))))
            for m_i, model_id in enumerate(models):
                title = catalog.MODELS[model_id].title
                for a_i, across_value in enumerate(across_values):
                    for v in range(variations):
                        seed = (start + v) % SEED_SPAN
                        sweep = {a.param: value for a, value in ((across, across_value), (down, down_value)) if a}
                        chosen = {**spec.base, **row, **sweep, "seed": seed}
                        composed = catalog.compose(model_id, chosen, list(spec.images), spec.image_field)
                        body = composed.input
                        notes += [f"{title}: {note}" for note in composed.notes]
                        problems += [f"{title}: {p.message}" for p in catalog.errors(catalog.validate(model_id, body))]
                        for name, value in sweep.items():
                            if body.get(name) != value:
                                problems.append(f"{title}: {_label(name)} is not sent with these "
                                                "settings, so sweeping it would repeat one image.")
                        col = (m_i * len(across_values) + a_i) * variations + v
                        col_labels[col] = " · ".join(filter(None, (
                            title if len(models) > 1 or not (across or variations > 1) else "",
                            _axis_text(across, across_value),
                            f"seed {seed}" if variations > 1 else ""))) or title
                        stored += len(json.dumps(body))
                        estimates.append(estimate(model_id, body))
                        cells.append(PlannedCell(
                            idx=len(cells), row=row_index, col=col, row_label=row_labels[row_index],
                            col_label=col_labels[col], prompt_index=p_i, variation=v, model=model_id,
                            input=body, seed=body.get("seed") if _is_seed(body.get("seed")) else None,
                            sweep=sweep))
    if stored > MAX_STORED_BYTES:
        problems.append(f"The batch's inputs are too large to store ({stored / 2**20:.0f} MB): give images "
                        "as https:// URLs rather than uploads.")
    cells.sort(key=lambda c: (c.row, c.col))  # sent row by row, as the sheet fills
    cells = [replace(cell, idx=i) for i, cell in enumerate(cells)]
    return BatchPlan(
        spec=spec, count=count, cells=tuple(cells), problems=tuple(dict.fromkeys(problems)),
        notes=tuple(dict.fromkeys(notes)), estimated_usd=prices.total(estimates),
        rows=tuple(row_labels[i] for i in sorted(row_labels)),
        columns=tuple(col_labels[i] for i in sorted(col_labels)), first_seed=first_seed)


def _params_of(model_ids: Sequence[str]) -> dict[str, catalog.Param]:
    """Every parameter of the models, the first model's definition for a shared name."""
    found: dict[str, catalog.Param] = {}
    for model_id in model_ids:
        model = catalog.MODELS.get(model_id)
        for param in model.params if model else ():
            found.setdefault(param.name, param)
    return found


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(param: catalog.Param, raw: Any) -> tuple[Any, str | None]:
    """A value typed or read from text, as the parameter's type: (value, None) or (None, why)."""
    label = param.label
    text = raw.strip() if isinstance(raw, str) else None
    if raw is None or text == "":
        return None, f"{label}: a value is empty."
    if param.type in ("integer", "number"):
        number: Any = raw
        if text is not None:
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            return None, f"{label}: {_repr(raw)} is not a number."
        if param.type == "integer":
            if isinstance(number, float) and not number.is_integer():
                return None, f"{label}: {_repr(raw)} is not a whole number."
            number = int(number)
        return number, None
    if param.type == "boolean":
        if isinstance(raw, bool):
            return raw, None
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE, None
        return None, f"{label}: {_repr(raw)} is not true or false."
    if param.type == "string":
        if isinstance(raw, bool):
            return None, f"{label}: {_repr(raw)} is not text."
        if isinstance(raw, (int, float)):
            return f"{raw:g}" if isinstance(raw, float) else str(raw), None
        return text, None
    return raw, None  # images: checked by catalog.validate


def _same(value: Any) -> Any:
    """Values that send the same thing compare equal (3 and 3.0)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_SPAN


def _derived_seed(spec: BatchSpec) -> int:
    text = json.dumps([list(spec.prompts), list(spec.models), spec.variations, dict(spec.base),
                       [[a.param, list(a.values)] for a in spec.axes]], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _label(name: str) -> str:
    """A parameter's label from whichever model has it; unknown ones by their name."""
    found = next((p for m in catalog.MODELS.values() if (p := m.param(name)) is not None), None)
    return found.label if found else repr(name)


def _repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _axis_text(axis: Axis | None, value: Any) -> str:
    return f"{_label(axis.param)} {value}" if axis else ""


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def spec_json(spec: BatchSpec, first_seed: int | None) -> dict[str, Any]:
    """The spec as stored with the batch (the seed it actually used, so it can be run again)."""
    return {"prompts": [p if isinstance(p, str) else dict(p) for p in spec.prompts], "models": list(spec.models),
            "variations": spec.variations, "base": dict(spec.base),
            "axes": [{"param": a.param, "values": list(a.values)} for a in spec.axes],
            "seed": first_seed, "title": spec.title, "images": list(spec.images), "image_field": spec.image_field}


def spec_from_json(data: Mapping[str, Any]) -> BatchSpec:
    """A stored batch's spec, to run it again (with its seeds) or edit it."""
    return BatchSpec(prompts=tuple(data.get("prompts") or ()), models=tuple(data.get("models") or ()),
                     variations=data.get("variations", 1), base=dict(data.get("base") or {}),
                     axes=tuple(Axis(a["param"], tuple(a["values"])) for a in data.get("axes") or ()),
                     seed=data.get("seed"), title=data.get("title") or "", images=tuple(data.get("images") or ()),
                     image_field=data.get("image_field"))


# ---- stored batches -------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    id: str
    created_at: datetime
    creator: str | None
    title: str
    state: str  # RUNNING, CANCELED or FINISHED
    spec: dict[str, Any]
    total: int
    counts: dict[str, int]  # cells by state
    estimated_usd: float | None
    stop_note: str | None
    finished_at: datetime | None

    @property
    def unsent(self) -> int:
        return sum(self.counts.get(state, 0) for state in UNSENT)

    @property
    def active(self) -> bool:
        """Cells are still to be sent (a canceled batch may still finish the ones in flight).
        From the batch's own row, written with its last cell: `counts` are read after it, so
        on PostgreSQL they may already be newer, never older."""
        return self.finished_at is None


@dataclass(frozen=True)
class Cell:
    batch_id: str
    idx: int
    row: int
    col: int
    row_label: str
    col_label: str
    prompt_index: int
    variation: int
    model: str
    input: dict[str, Any]
    seed: int | None
    sweep: dict[str, Any]
    state: str
    prediction_id: str | None
    error: str | None
    attempts: int
    sent_at: datetime | None
    prediction_status: str | None = None  # the history's, once the prediction is recorded
    creator: str | None = None


@dataclass(frozen=True)
class CancelResult:
    unsent: int  # cells that will never be sent
    asked: int  # running predictions asked to cancel
    problems: tuple[str, ...] = ()  # cancels the API refused or could not take


class Batches:
    """Batches and their cells in the history's database (`store`: a comet.store.Store)."""

    def __init__(self, store: Any) -> None:
        self._store = store

        def create(conn: sa.Connection) -> None:
            if store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            for table in batch_metadata.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda ix: ix.name):
                    conn.execute(CreateIndex(index, if_not_exists=True))

        store._write(create)

    # ---- writes ----------------------------------------------------------------------------

    def add(self, batch_plan: BatchPlan, *, creator: str | None = None, title: str = "",
            now: float | None = None) -> str:
        """Store a planned batch, all its cells pending; returns its id. Refuses a plan with
        problems (ValueError with the first)."""
        if batch_plan.problems or not batch_plan.cells:
            raise ValueError(batch_plan.problems[0] if batch_plan.problems else "The batch has no cells.")
        now = time.time() if now is None else now
        batch_id = uuid.uuid4().hex
        head = {"id": batch_id, "created_at": now, "creator": (creator or "").strip()[:200] or None,
                "title": (title or batch_plan.spec.title or "").strip()[:200], "state": RUNNING,
                "spec": json.dumps(spec_json(batch_plan.spec, batch_plan.first_seed), default=str),
                "cells": len(batch_plan.cells), "estimated_usd": batch_plan.estimated_usd}
        rows = [{"batch_id": batch_id, "idx": c.idx, "created_at": now, "row": c.row, "col": c.col,
                 "row_label": c.row_label[:300], "col_label": c.col_label[:300], "prompt_index": c.prompt_index,
                 "variation": c.variation, "model": c.model, "input": json.dumps(c.input), "seed": c.seed,
                 "sweep": json.dumps(c.sweep), "state": PENDING, "attempts": 0, "not_before": 0.0}
                for c in batch_plan.cells]

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.insert(batch_table).values(head))
            conn.execute(sa.insert(cell_table), rows)

        self._store._write(work)
        return batch_id

    def claim(self, owner: str, *, now: float | None = None, lease: float = 60.0, limit: int = 1,
              concurrency: int = DEFAULT_CONCURRENCY) -> list[Cell]:
        """Take up to `limit` pending cells (oldest batch first, in order) for `owner` until
        `now + lease`, marked `sending` in this one committed transaction, so that no more than
        `concurrency` cells of any owner are `sending` under an unexpired lease. Serialised
        (SQLite: the write lock; PostgreSQL: an advisory lock), so two claims never take one cell
        nor pass the limit together."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> list[Cell]:
            if self._store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            busy = conn.scalar(sa.select(sa.func.count()).select_from(cell_table)
                               .where(c.state == SENDING, c.lease_until > now)) or 0
            free = min(limit, concurrency - busy)
            if free <= 0:
                return []
            keys = conn.execute(sa.select(c.batch_id, c.idx)
                                .where(c.state == PENDING, c.not_before <= now)
                                .order_by(c.created_at, c.batch_id, c.idx).limit(free)).all()
            if not keys:
                return []
            chosen = sa.tuple_(c.batch_id, c.idx).in_([tuple(k) for k in keys])
            conn.execute(sa.update(cell_table).where(chosen, c.state == PENDING)
                         .values(state=SENDING, lease_owner=owner, lease_until=now + lease))
            return self._cells(conn, chosen)

        return self._store._write(work)

    def renew(self, owner: str, keys: Iterable[tuple[str, int]], until: float) -> None:
        """Extend `owner`'s leases on these cells (creates still in flight)."""
        keys = list(keys)
        if not keys:
            return
        c = cell_table.c
        self._store._write(lambda conn: conn.execute(
            sa.update(cell_table).where(sa.tuple_(c.batch_id, c.idx).in_(keys), c.lease_owner == owner,
                                         c.state.in_((SENDING, UNCERTAIN)))
            .values(lease_until=until)))

    def note_reservation(self, owner: str, cell: Cell, reservation: str) -> None:
        c = cell_table.c
        self._store._write(lambda conn: conn.execute(
            sa.update(cell_table).where(c.batch_id == cell.batch_id, c.idx == cell.idx, c.lease_owner == owner)
            .values(reservation=reservation)))

    def settle(self, owner: str, cell: Cell, state: str, *, now: float | None = None,
               prediction_id: str | None = None, error: str | None = None, not_before: float | None = None,
               attempts: int | None = None) -> str | None:
        """The outcome of `owner`'s cell: SENT (with its prediction id), FAILED, REFUSED,
        CANCELED, UNCERTAIN, or back to PENDING (not sent: a 429, a stop). Fenced by the lease
        owner; accepted also when another runner already called it uncertain (this one knows
        better). SENT also writes the batch id on the prediction's history row (History's batch
        column and filter), in the same transaction. Returns the batch's state then, or None when
        the cell was not this owner's."""
        now = time.time() if now is None else now
        c = cell_table.c
        values: dict[str, Any] = {"state": state, "error": _clip(error), "lease_owner": None, "lease_until": None}
        if state == SENT:
            values.update(prediction_id=prediction_id, sent_at=now, reservation=None)
        if state == PENDING:
            values.update(not_before=not_before or 0.0, reservation=None)
        if attempts is not None:
            values["attempts"] = attempts

        def work(conn: sa.Connection) -> str | None:
            changed = conn.execute(
                sa.update(cell_table)
                .where(c.batch_id == cell.batch_id, c.idx == cell.idx, c.lease_owner == owner,
                       c.state.in_((SENDING, UNCERTAIN)))
                .values(values)).rowcount
            if not changed:
                return None
            if state == SENT and prediction_id:  # the history row (recorded by `track`) names its batch
                conn.execute(sa.update(_predictions).where(_predictions.c.id == prediction_id,
                                                           _predictions.c.batch_id.is_(None))
                             .values(batch_id=cell.batch_id))
            self._finish(conn, [cell.batch_id], now)
            return conn.scalar(sa.select(batch_table.c.state).where(batch_table.c.id == cell.batch_id))

        return self._store._write(work)

    def stop_unsent(self, batch_id: str, message: str, *, now: float | None = None) -> int:
        """A spending limit refused a cell: every cell not yet claimed becomes REFUSED with the
        message, and claimed ones not yet sent follow (`gate`). Returns how many."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> int:
            conn.execute(sa.update(batch_table).where(batch_table.c.id == batch_id).values(stop_note=_clip(message)))
            count = conn.execute(sa.update(cell_table).where(c.batch_id == batch_id, c.state == PENDING)
                                 .values(state=REFUSED, error=_clip(message))).rowcount
            self._finish(conn, [batch_id], now)
            return count

        return self._store._write(work)

    def cancel(self, batch_id: str, *, now: float | None = None) -> int:
        """Cancel a batch: its pending cells are never sent (claimed ones not yet sent follow,
        `gate`). Returns how many cells were canceled."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> int:
            conn.execute(sa.update(batch_table).where(batch_table.c.id == batch_id, batch_table.c.state == RUNNING)
                         .values(state=CANCELED))
            count = conn.execute(sa.update(cell_table).where(c.batch_id == batch_id, c.state == PENDING)
                                 .values(state=CANCELED, error=CANCELED_NOTE)).rowcount
            self._finish(conn, [batch_id], now)
            return count

        return self._store._write(work)

    def recover(self, *, now: float | None = None) -> list[tuple[str, int, str | None]]:
        """Cells left `sending` by a process whose lease ran out (it died mid-create) become
        UNCERTAIN: they may have been accepted, so they are never sent again by themselves.
        Returns (batch id, idx, reservation) of each."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> list[tuple[str, int, str | None]]:
            lost = conn.execute(sa.select(c.batch_id, c.idx, c.reservation)
                                .where(c.state == SENDING, c.lease_until <= now)
                                .with_for_update(skip_locked=True)).all()
            if not lost:
                return []
            # The owner is kept: if that process is alive after all, its answer still lands.
            conn.execute(sa.update(cell_table)
                         .where(sa.tuple_(c.batch_id, c.idx).in_([(r.batch_id, r.idx) for r in lost]),
                                c.state == SENDING)
                         .values(state=UNCERTAIN, error=DEAD_SENDER_NOTE, lease_until=None))
            self._finish(conn, sorted({r.batch_id for r in lost}), now)
            return [(r.batch_id, r.idx, r.reservation) for r in lost]

        return self._store._write(work)

    def _finish(self, conn: sa.Connection, batch_ids: list[str], now: float) -> None:
        """A batch with no cell left to send is finished (a canceled one keeps its state). Every
        transaction that moves a cell out of pending or sending calls this after doing so: the
        row lock makes them take turns here, so the last one sees the others' cells (PostgreSQL
        reads committed rows; two finishing cells would otherwise each see the other unsent)."""
        c = cell_table.c
        for batch_id in batch_ids:
            conn.execute(sa.select(batch_table.c.id).where(batch_table.c.id == batch_id).with_for_update())
            left = sa.exists().where(c.batch_id == batch_id, c.state.in_(UNSENT))
            conn.execute(sa.update(batch_table)
                         .where(batch_table.c.id == batch_id, batch_table.c.finished_at.is_(None), ~left)
                         .values(finished_at=now,
                                 state=sa.case((batch_table.c.state == RUNNING, FINISHED), else_=batch_table.c.state)))

    # ---- reads -----------------------------------------------------------------------------

    def get(self, batch_id: str) -> Batch | None:
        found = self._batches(batch_table.c.id == batch_id)
        return found[0] if found else None

    def recent(self, limit: int = 20, *, creator: str | None = None) -> list[Batch]:
        """The newest batches first, with their counts (one query for the counts of all)."""
        where = [batch_table.c.creator == creator] if creator else []
        return self._batches(*where, limit=limit)

    def cells(self, batch_id: str) -> list[Cell]:
        """A batch's cells in order, each with its prediction's status in the history."""
        return self._store._read(lambda conn: self._cells(conn, cell_table.c.batch_id == batch_id))

    def gate(self, batch_id: str) -> tuple[str | None, str | None]:
        """(state, stop note) of a batch: whether a claimed cell may still be sent."""
        row = self._store._read(lambda conn: conn.execute(
            sa.select(batch_table.c.state, batch_table.c.stop_note).where(batch_table.c.id == batch_id)).first())
        return (row.state, row.stop_note) if row else (None, None)

    def running_predictions(self, batch_id: str) -> list[str]:
        """Ids of the batch's sent predictions that have not ended (or are not recorded yet)."""
        c, p = cell_table.c, _predictions.c
        query = (sa.select(c.prediction_id)
                 .select_from(cell_table.outerjoin(_predictions, p.id == c.prediction_id))
                 .where(c.batch_id == batch_id, c.state == SENT, c.prediction_id.is_not(None),
                        sa.or_(p.status.is_(None), p.status.not_in(list(TERMINAL))))
                 .order_by(c.idx))
        return self._store._read(lambda conn: list(conn.scalars(query)))

    def _batches(self, *where: sa.ColumnElement[bool], limit: int | None = None) -> list[Batch]:
        query = sa.select(batch_table).where(*where).order_by(batch_table.c.created_at.desc())
        if limit is not None:
            query = query.limit(limit)

        def read(conn: sa.Connection) -> list[Batch]:
            rows = conn.execute(query).all()
            counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
            if counts:
                c = cell_table.c
                for batch_id, state, n in conn.execute(
                        sa.select(c.batch_id, c.state, sa.func.count()).where(c.batch_id.in_(list(counts)))
                        .group_by(c.batch_id, c.state)):
                    counts[batch_id][state] = n
            return [Batch(id=row.id, created_at=_when(row.created_at), creator=row.creator, title=row.title,
                          state=row.state, spec=_loads(row.spec, dict), total=row.cells, counts=counts[row.id],
                          estimated_usd=row.estimated_usd, stop_note=row.stop_note,
                          finished_at=_when(row.finished_at) if row.finished_at is not None else None)
                    for row in rows]

        return self._store._read(read)

    @staticmethod
    def _cells(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[Cell]:
        c, p = cell_table.c, _predictions.c
        query = (sa.select(cell_table, p.status.label("prediction_status"), batch_table.c.creator)
                 .select_from(cell_table.join(batch_table, batch_table.c.id == c.batch_id)
                              .outerjoin(_predictions, p.id == c.prediction_id))
                 .where(where).order_by(c.created_at, c.batch_id, c.idx))
        return [Cell(batch_id=r.batch_id, idx=r.idx, row=r.row, col=r.col, row_label=r.row_label,
                     col_label=r.col_label, prompt_index=r.prompt_index, variation=r.variation, model=r.model,
                     input=_loads(r.input, dict), seed=r.seed, sweep=_loads(r.sweep, dict), state=r.state,
                     prediction_id=r.prediction_id, error=r.error, attempts=r.attempts or 0,
                     sent_at=_when(r.sent_at) if r.sent_at is not None else None,
                     prediction_status=r.prediction_status, creator=r.creator)
                for r in conn.execute(query)]


def _loads(text: str | None, kind: type) -> Any:
    try:
        value = json.loads(text or "")
    except ValueError:
        return kind()
    return value if isinstance(value, kind) else kind()


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


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

    def stop(self) -> None:
        """Send nothing new and wait for the creates in flight (each bounded by the client's
        deadline), so an orderly restart leaves no cell uncertain. Cells claimed but not yet
        sent go back to pending."""
        self._stopping.set()
        self._wake.set()
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
