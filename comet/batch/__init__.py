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
    failed | refused | uncertain -> pending (the user sends them again, once the batch finished)

One job per module: `planning` (pure: spec to cells), `cells` (the tables and `Batches`, their
reads and writes), `runner` (`BatchRunner`).
"""

from __future__ import annotations

from .cells import (  # noqa: F401 - the package's public names
    CANCELED,
    CANCELED_NOTE,
    DEAD_SENDER_NOTE,
    DEFAULT_CONCURRENCY,
    FAILED,
    FINISHED,
    MESSAGE_CHARS,
    PENDING,
    REFUSED,
    RESENDABLE,
    RUNNING,
    SENDING,
    SENT,
    UNCERTAIN,
    UNSENT,
    Batch,
    Batches,
    CancelResult,
    Cell,
    batch_metadata,
    batch_table,
    cell_table,
)
from .planning import (  # noqa: F401 - the package's public names
    CSV_MAX_ROWS,
    DEFAULT_MAX,
    LABEL_CHARS,
    MAX_AXES,
    MAX_STORED_BYTES,
    SEED_SPAN,
    Axis,
    BatchPlan,
    BatchSpec,
    Estimator,
    PlannedCell,
    catalog_prices,
    plan,
    prompts_from_text,
    random_seed,
    rows_from_csv,
    spec_from_json,
    spec_json,
)
from .runner import (  # noqa: F401 - the package's public names
    BatchRunner,
)
