"""History: every prediction this app has seen, and its output files.

The API has no list route and deletes output files an hour after a run, so this store is the
team's only record and keeps the images themselves. SQLAlchemy Core with portable types and
queries: the default SQLite file can be swapped for PostgreSQL (COMET_DATABASE_URL) without
touching callers. Times are stored as float epoch seconds (UTC); arguments such as `next_poll_at`
take the same unit (the tracker's clock), and Records and frames hand them back as aware UTC
datetimes. Nothing here ever sees the API key: the stored input is the model input only.

One job per module, and `Store` is all of them on one database:
  schema    the tables and the limits their values are held to
  db        opening the database, migrations, retries (HistoryError, HistoryUnavailable)
  values    values in and out: text that fits, times and numbers read back as "unknown" if odd
  records   Record, and the writes that record predictions and their outputs
  leases    which tracker polls what (claim, renew, release), what is due or unfinished
  queries   the History page's listing, count and export, filtered by one HistoryFilter; the
            lineage of an edit chain
  media     moving images out of the database, and retention
  scrub     removing a leaked API key from stored text
"""

from __future__ import annotations

import sqlalchemy as sa

from ..config import Settings
from ..images import THUMBNAIL_SIDE, THUMBNAIL_TYPE, make_thumbnail
from ..media import MediaError, MediaStore, S3Location, from_setting
from .db import RETRY_DELAYS, Database, HistoryError, HistoryUnavailable, database_url
from .leases import DEFAULT_LEASE, Leases
from .media import MOVE_BATCH, MediaMoves
from .queries import CHAIN_DEPTH, PAGE_COLUMNS, PAGE_TEXT_CHARS, ChainLink, HistoryFilter, Lineage, Queries
from .records import UNKNOWN_TIME, OutputInfo, Record, Records
from .schema import ACTIVE, DONE, GAVE_UP, SCHEMA_VERSION, meta, metadata, outputs, predictions
from .scrub import MIN_SECRET_CHARS, SCRUBBED, Scrub

__all__ = [
    "ACTIVE", "CHAIN_DEPTH", "DEFAULT_LEASE", "DONE", "GAVE_UP", "MIN_SECRET_CHARS", "MOVE_BATCH", "PAGE_COLUMNS",
    "PAGE_TEXT_CHARS", "RETRY_DELAYS", "SCHEMA_VERSION", "SCRUBBED", "THUMBNAIL_SIDE", "THUMBNAIL_TYPE",
    "UNKNOWN_TIME", "ChainLink", "HistoryError", "HistoryFilter", "HistoryUnavailable", "Lineage", "OutputInfo",
    "Record", "Store",
    "database_url", "make_thumbnail", "meta", "metadata", "outputs", "predictions",
]


class Store(Records, Leases, Queries, MediaMoves, Scrub, Database):
    """Thread-safe: each call checks out its own pooled connection; writes are short
    transactions. Transient database errors are retried (RETRY_DELAYS), then raise
    HistoryUnavailable."""

    def __init__(self, url: str | sa.URL, *, media: MediaStore | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        """`media`: where new output images go (None: inside the database, as before)."""
        self.media = media
        super().__init__(url, retry_delays=retry_delays)

    @classmethod
    def for_settings(cls, settings: Settings, *, media: MediaStore | None | str = "configured") -> Store:
        """The configured database, else an SQLite file in the data folder (a separate one in
        demo mode, so demo predictions never mix with real ones). `media`: the media store to use;
        by default the configured folder or the database. An S3 bucket is opened by the caller
        (comet.objectstore.open_media: it speaks HTTP, which this layer never imports)."""
        if media == "configured":
            chosen = settings.s3 or from_setting(settings.media_url, data_dir=settings.data_dir,
                                                 database_url=settings.database_url)
            if isinstance(chosen, S3Location):
                raise MediaError("COMET_MEDIA_URL is an s3:// bucket: open it with comet.objectstore.open_media "
                                 "and pass it as media=")
            media = chosen
        if settings.database_url:
            return cls(settings.database_url, media=media)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        name = "history-demo.sqlite" if settings.demo else "history.sqlite"
        return cls(sa.URL.create("sqlite", database=str(settings.data_dir / name)), media=media)
