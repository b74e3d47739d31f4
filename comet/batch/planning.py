"""Planning a batch: a BatchSpec (prompts, variations, models, sweeps) becomes a BatchPlan whose
cells hold exactly what each create will send. Pure: no database, no network."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import catalog, prices

DEFAULT_MAX = 200  # predictions per batch (COMET_BATCH_MAX)
MAX_AXES = 2
SEED_SPAN = 2**32  # seeds are 0 .. 2**32 - 1, as the form's
MAX_STORED_BYTES = 16 * 1024 * 1024  # the cells' inputs together: uploads belong behind a URL
LABEL_CHARS = 80
CSV_MAX_ROWS = 5000

Estimator = Callable[[str, Mapping[str, Any]], "prices.Estimate | None"]


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


