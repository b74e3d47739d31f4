"""Where stored images live over time: moved out of the database into the media store
(comet.media: files or S3), and pruned by retention (the thumbnail stays).

New images go straight to the media store when one is configured (records); this moves the ones
older releases kept in `outputs.data`.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from ..media import MediaStore
from .db import Database
from .schema import outputs, predictions

MOVE_BATCH = 50  # images moved to the media store (or pruned) per transaction
_log = logging.getLogger(__name__)


class MediaMoves(Database):
    media: MediaStore | None  # where images go (None: they stay inside the database)

    def move_media(self, limit: int | None = None) -> int:
        """Move images still inside the database to the media store, MOVE_BATCH per transaction;
        returns how many moved. Resumable and safe to interrupt: a file is written (atomically)
        before its row points at it, and a row already moved is never touched again, so an
        interruption at any point loses nothing and the next run carries on."""
        if self.media is None:
            return 0
        media = self.media
        o = outputs.c
        pending = (sa.select(o.prediction_id, o.idx, o.content_type, o.data)
                   .where(o.media_key.is_(None), sa.func.length(o.data) > 0)
                   .order_by(o.prediction_id, o.idx).limit(MOVE_BATCH))
        moved = 0
        while limit is None or moved < limit:
            rows = self._read(lambda conn: conn.execute(pending).all())
            if not rows:
                break
            placed = [(row, media.put(row.data, row.content_type)) for row in rows]

            def point(conn: sa.Connection) -> int:
                done = 0
                for row, key in placed:  # noqa: B023 - point() runs within this iteration
                    done += conn.execute(
                        sa.update(outputs)
                        .where(o.prediction_id == row.prediction_id, o.idx == row.idx, o.media_key.is_(None))
                        .values(media_key=key, data=b"")).rowcount
                return done

            moved += self._write(point)
        if moved:  # a warning so the server's console shows it (info is hidden by default)
            _log.warning("moved %d stored image(s) out of the database into %r", moved, media)
        return moved

    def prune_media(self, before: float) -> int:
        """Retention: remove the full images of predictions that ended before `before` (epoch
        seconds), keeping rows and thumbnails; returns how many were pruned. The rows are marked
        first and a file is deleted only once no unpruned row points at it (identical images share
        one file), so an interruption leaves at worst an orphan file, never a dangling row."""
        o, p = outputs.c, predictions.c
        ended = sa.func.coalesce(p.completed_at, p.created_at)
        due = (sa.select(o.prediction_id, o.idx, o.media_key)
               .join(predictions, p.id == o.prediction_id)
               .where(o.pruned_at.is_(None), ended < before)
               .limit(MOVE_BATCH))
        pruned = 0
        while True:
            def mark(conn: sa.Connection) -> list[str]:
                rows = conn.execute(due).all()
                now = time.time()
                for row in rows:
                    conn.execute(sa.update(outputs).where(o.prediction_id == row.prediction_id, o.idx == row.idx)
                                 .values(data=b"", pruned_at=now))
                return [row.media_key for row in rows]

            keys = self._write(mark)
            if not keys:
                break
            pruned += len(keys)
            for key in {k for k in keys if k is not None}:
                still_used = self._read(lambda conn, key=key: conn.scalar(
                    sa.select(sa.func.count()).select_from(outputs).where(o.media_key == key, o.pruned_at.is_(None))))
                if not still_used and self.media is not None:
                    self.media.delete(key)
        if pruned:
            _log.warning("retention: removed %d full image(s) (thumbnails kept)", pruned)
        return pruned
