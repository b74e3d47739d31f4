"""The tables, and the limits their values are held to.

Times are float epoch seconds (UTC). Listings are "newest first" (created_at, then id), so every
filterable column has an index that ends in the same order.
"""

from __future__ import annotations

import sqlalchemy as sa

# 1: first release. 2: lease columns (lease_owner, lease_until) for several trackers on one database.
# 3: outputs.media_key: an image kept in the media store (comet.media) instead of outputs.data;
#    outputs.pruned_at: when retention removed the full image (the thumbnail stays).
# 4: predictions.parent_id / parent_output: the stored output this one edited ("Edit this image");
#    predictions.batch_id: the batch that sent it (comet.batch).
SCHEMA_VERSION = 4
# predictions.tracking: polled by a tracker, finished, or stopped with a note saying why.
ACTIVE, DONE, GAVE_UP = "active", "done", "gave_up"
LOGS_TAIL_CHARS = 4096

# Anything the upstream sent may be stored, and older releases stored it unchecked: writes fit
# text to its column (PostgreSQL refuses a longer value, and the answer would be lost) and reads
# turn what no view can show into "unknown", so one bad row shows as bad and the others as usual.
MODEL_CHARS, STATUS_CHARS, CREATOR_CHARS = 200, 32, 200  # the column widths below
ID_CHARS, BATCH_ID_CHARS = 64, 32
TEXT_CHARS = 4000  # error and note: a message, not a dump

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(MODEL_CHARS), nullable=False, default=""),
    sa.Column("status", sa.String(STATUS_CHARS), nullable=False),
    sa.Column("input", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("prompt", sa.Text, nullable=False, default=""),  # from input, for filtering
    sa.Column("error", sa.Text),
    sa.Column("logs_tail", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("completed_at", sa.Float),
    sa.Column("run_time", sa.Float),
    sa.Column("creator", sa.String(CREATOR_CHARS)),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("last_polled_at", sa.Float),
    sa.Column("next_poll_at", sa.Float),
    sa.Column("poll_failures", sa.Integer, nullable=False, default=0),
    sa.Column("tracking", sa.String(16), nullable=False, default=ACTIVE),
    sa.Column("note", sa.Text),  # user-facing: why tracking gave up, or the last poll problem
    sa.Column("output_urls", sa.Text, nullable=False, default="[]"),  # JSON list
    sa.Column("data_removed", sa.Boolean, nullable=False, default=False),
    sa.Column("output_count", sa.Integer, nullable=False, default=0),  # outputs stored here
    # Schema 2: which tracker is polling it now, and until when its claim holds (epoch seconds).
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", sa.Float),
    # Schema 4: lineage and batch, written once when the prediction is recorded, never updated.
    sa.Column("parent_id", sa.String(ID_CHARS)),  # the prediction whose output this one edited
    sa.Column("parent_output", sa.Integer),  # that output's idx
    sa.Column("batch_id", sa.String(BATCH_ID_CHARS)),
)
# Every listing is "newest first" (created_at, then id to break ties), optionally filtered.
sa.Index("ix_predictions_created", predictions.c.created_at.desc(), predictions.c.id.desc())
sa.Index("ix_predictions_status", predictions.c.status, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_model", predictions.c.model, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_creator", predictions.c.creator, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_tracking", predictions.c.tracking, predictions.c.next_poll_at)
# A prediction's children (its chain), and a batch's predictions, newest first.
sa.Index("ix_predictions_parent", predictions.c.parent_id, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_batch", predictions.c.batch_id, predictions.c.created_at, predictions.c.id)

outputs = sa.Table(
    "outputs",
    metadata,
    sa.Column("prediction_id", sa.String(64), sa.ForeignKey("predictions.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("thumbnail", sa.LargeBinary),  # None when Pillow could not make one
    sa.Column("source_url", sa.Text, nullable=False),
    # Schema 3: where the media store keeps the image; then `data` is empty (b"").
    sa.Column("media_key", sa.String(80)),
    sa.Column("pruned_at", sa.Float),  # epoch seconds retention removed the full image, or None
)
