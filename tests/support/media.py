"""Stored images for the media tests: a small PNG, a succeeded prediction holding one, and how
many image bytes the database itself still holds."""

from __future__ import annotations

import io

import sqlalchemy as sa
from PIL import Image

from comet.fetch import StoredFile
from comet.prediction import Prediction
from comet.store import Store, outputs

SCHNELL = "black-forest-labs/flux-schnell"


def png(color=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, format="PNG")
    return buffer.getvalue()


def saved(store: Store, n: int, color=(200, 40, 40)) -> str:
    prediction_id = f"media{n}".ljust(26, "0")
    store.record(Prediction(id=prediction_id, model=SCHNELL, status="succeeded", input={"prompt": "x"}))
    store.save_outputs(prediction_id, [StoredFile("image/png", png(color), "https://x/a.png")])
    return prediction_id


def bytes_in_database(store: Store) -> int:
    with store._engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(outputs.c.data)), 0))))
