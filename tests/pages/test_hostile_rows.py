"""One bad row shows as bad, the others as usual.

Older releases stored what the upstream sent without checking it, and either database can hold
anything: a year-9999 creation time, an infinite run time, a megabyte of status, markdown in a
status, JSON that does not parse. History, the card, the CSV and the ZIP must still work for
everyone, showing such a row as best they can. The rows are written here straight into the demo
history file with SQL, as an older release would have left them."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import time
import zipfile

import pandas as pd
import pytest
import sqlalchemy as sa
from PIL import Image

from comet import export
from comet.config import Settings
from comet.fetch import StoredFile
from comet.prediction import Prediction
from comet.store import Store, predictions
from comet.ui import history_view as view
from support.apptest import open_app

HISTORY = "pages/history.py"
SCHNELL = "black-forest-labs/flux-schnell"
MEGABYTE = 1_000_000
PHISH = "[log in](https://evil.example) ![x](https://other.host/pixel.png)"
BARE = "see https://evil.example/path or www.evil.example, or write to admin@evil.example"

GOOD_IMAGE, GOOD_FAILURE = "ordinary0succeeded0000001", "ordinary0failed000000001"
BAD = {
    "year9999created000000001": {"created_at": 253402214400.0},  # 9999-12-31: pandas cannot hold it
    "negativecreated000000001": {"created_at": -1e12},
    "infiniterun0time00000001": {"run_time": math.inf},
    "nan0run0time000000000001": {"run_time": math.nan},
    "negativerun0time00000001": {"run_time": -5.0},
    "megabyte0status000000001": {"status": "s" * MEGABYTE},
    "megabyte0model0000000001": {"model": "m" * MEGABYTE},
    "megabyte0error0000000001": {"status": "failed", "error": "e" * MEGABYTE},
    "markdown0status000000001": {"status": PHISH, "error": "no"},
    "bare0links0in0text000001": {"status": "failed", "error": BARE, "note": BARE},
    "malformed0json0000000001": {"input": "{not json", "output_urls": "[oops"},
    # Succeeded, tracking over, nothing stored: the card must not say "Saving the images…" for ever.
    "saved0nothing00000000001": {"note": "The images could not be downloaded: 404."},
}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 80, 10)).save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def unchecked(data_dir):
    """A transaction on the demo history file, as an older release would write to it."""
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(data_dir / "history-demo.sqlite")))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


@pytest.fixture
def history(app_env):
    """The demo history (what the app opens without a key): two ordinary predictions stored the
    usual way, then the bad rows written raw."""
    store = Store.for_settings(Settings.from_sources({}, {"COMET_DATA_DIR": str(app_env)}))
    created = "2026-11-25T10:00:00Z"
    store.record(Prediction.from_json({"id": GOOD_IMAGE, "model": SCHNELL, "status": "succeeded", "created_at": created,
                                       "input": {"prompt": "a calm lake"}, "metrics": {"predict_time": 2.5}}))
    store.save_outputs(GOOD_IMAGE, [StoredFile("image/png", png(), "https://replicate.delivery/a/0.png")])
    failed = {"id": GOOD_FAILURE, "model": SCHNELL, "status": "failed", "created_at": created,
              "input": {"prompt": "a cracked vase"}, "error": "out of memory"}
    store.record(Prediction.from_json(failed))
    store.update(Prediction.from_json(failed))
    now = time.time()
    with unchecked(app_env) as conn:
        for n, (prediction_id, values) in enumerate(BAD.items()):
            at = now - 60 * n
            conn.execute(sa.insert(predictions).values({
                "id": prediction_id, "model": SCHNELL, "status": "succeeded", "input": '{"prompt": "odd"}',
                "prompt": "odd", "logs_tail": "", "created_at": at, "recorded_at": at, "updated_at": at,
                "poll_failures": 0, "tracking": "done", "output_urls": "[]", "data_removed": False,
                "output_count": 0, **values}))
    yield store
    store.close()


def history_page(query: dict | None = None):
    at = open_app(page=HISTORY, query=query)
    assert not at.exception, at.exception
    return at


def the_table(at) -> pd.DataFrame:
    return next(frame for frame in at.dataframe if (frame.key or "").startswith(view.TABLE_KEY)).value


def shipped_bytes(at) -> int:
    """What this run sends the browser: every element and block of the page, serialised."""
    def size(node) -> int:
        own = len(node.proto.SerializeToString()) if getattr(node, "proto", None) is not None else 0
        return own + sum(size(child) for child in getattr(node, "children", {}).values())

    return size(at.main) + size(at.sidebar)


def test_history_lists_every_row_and_shows_the_ordinary_ones_as_usual(history):
    at = history_page()
    table = the_table(at).set_index("id")
    assert set(table.index) == {GOOD_IMAGE, GOOD_FAILURE, *BAD}
    good = table.loc[GOOD_IMAGE]
    assert (good["model"], list(good["status"]), good["run_time"]) == ("FLUX.1 [schnell]", ["succeeded"], "2.5 s")
    assert good["created"] == pd.Timestamp("2026-11-25T10:00:00Z")
    assert "data:image/jpeg;base64," in good["thumbnail"]
    assert list(table.loc[GOOD_FAILURE, "status"]) == ["failed"]
    # The bad values show as unknown, in their own rows only.
    assert table.loc[["year9999created000000001", "negativecreated000000001"], "created"].isna().all()
    assert list(table.loc[["infiniterun0time00000001", "nan0run0time000000000001", "negativerun0time00000001"],
                          "run_time"]) == ["", "", ""]


def test_a_megabyte_in_a_row_does_not_make_every_history_load_ship_it(history):
    at = history_page()
    cells = the_table(at).drop(columns="thumbnail").map(str)
    assert cells.map(len).to_numpy().max() <= 301
    # Everything the page sends (the table, the model filter's options, the rest), well under the
    # 4 MB those rows hold.
    assert shipped_bytes(at) < 200_000, shipped_bytes(at)


@pytest.mark.parametrize("prediction_id", list(BAD))
def test_each_bad_rows_detail_view_opens(history, prediction_id):
    at = history_page({"id": prediction_id})
    assert any(link.proto.query_string == f"id={prediction_id}" for link in at.get("page_link")), "the card is drawn"
    assert "Saving the images" not in " ".join(info.value for info in at.info)
    assert shipped_bytes(at) < 200_000


def test_a_succeeded_row_nobody_tracks_any_more_says_no_image_was_saved(history):
    at = history_page({"id": "saved0nothing00000000001"})
    assert any("No image was saved" in warning.value for warning in at.warning)
    assert any("could not be downloaded: 404" in caption.value.replace("\\", "") for caption in at.caption)


def test_a_succeeded_row_still_tracked_says_its_images_are_being_saved(history, app_env):
    with unchecked(app_env) as conn:  # the tracker has not stored them yet
        conn.execute(sa.update(predictions).where(predictions.c.id == "saved0nothing00000000001")
                     .values(tracking="active", next_poll_at=9e9))  # not due: the demo tracker leaves it
    at = history_page({"id": "saved0nothing00000000001"})
    assert any("Saving the images" in info.value for info in at.info)
    assert not any("No image was saved" in warning.value for warning in at.warning)


def badges(at) -> list[str]:
    return [m.value for m in at.main.markdown if re.match(r":\w+-badge\[", m.value)]


def test_a_status_made_of_markdown_is_shown_inert_in_its_badge_and_error_line(history):
    at = history_page({"id": "markdown0status000000001"})
    badge, = badges(at)
    # st.badge escapes the brackets; every other character markdown acts on is escaped by us, and
    # the label is cut short.
    assert badge.startswith(":violet-badge[:material/help: \\[log in\\]\\(https")
    assert re.search(r"(?<!\\)[()!:]", badge.removeprefix(":violet-badge[:material/help:")) is None
    assert len(badge) < 80
    error, = [e.value for e in at.error]
    assert error.startswith("**\\[log in\\]\\(https")
    assert re.search(r"(?<!\\)[\[\]()!]", error) is None


def test_a_known_status_keeps_its_coloured_badge(history):
    assert badges(history_page({"id": GOOD_IMAGE})) == [":green-badge[:material/check_circle: succeeded]"]
    at = history_page({"id": GOOD_FAILURE})
    assert badges(at) == [":red-badge[:material/error: failed]"]
    assert [e.value for e in at.error] == ["**Failed:** out of memory"]


def test_exports_hold_every_row(history):
    every = {GOOD_IMAGE, GOOD_FAILURE, *BAD}
    rows = exported(history.export_rows())
    assert {row["id"] for row in rows} == every
    assert next(row for row in rows if row["id"] == GOOD_IMAGE)["created_at"].startswith("2026-11-25 10:00:00")
    archive = zipfile.ZipFile(io.BytesIO(export.images_zip(history, sorted(every))))
    assert {name.split("/")[0] for name in archive.namelist()} == every
    assert archive.read(f"{GOOD_IMAGE}/0.png") == history.output_bytes(GOOD_IMAGE, 0)[1]
    assert archive.read("malformed0json0000000001/input.json") == b'{\n  "input": {}\n}'
    # A megabyte is cut to what a spreadsheet cell holds; an ordinary cell is whole.
    by_id = {row["id"]: row for row in rows}
    assert len(by_id["megabyte0error0000000001"]["error"]) == export.CELL_CHARS
    assert by_id[GOOD_FAILURE]["error"] == "out of memory"


def test_a_zip_never_holds_a_path_that_climbs_out_of_where_it_is_unpacked(history, app_env):
    with unchecked(app_env) as conn:
        conn.execute(sa.update(predictions).where(predictions.c.id == GOOD_FAILURE).values(id="../../evil"))
    names = zipfile.ZipFile(io.BytesIO(export.images_zip(history, ["../../evil", GOOD_IMAGE]))).namelist()
    assert len(names) == 3 and f"{GOOD_IMAGE}/input.json" in names  # a valid id is its own folder
    assert not any(".." in name or name.startswith("/") for name in names)


# ---- the CSV's formula guard ------------------------------------------------------------------


def exported(frame: pd.DataFrame) -> list[dict]:
    return list(csv.DictReader(io.StringIO(export.spreadsheet_csv(frame), newline="")))


def test_cells_a_spreadsheet_would_run_as_formulas_are_exported_as_text():
    starts = ["=1+1", "+1", "-1+2", "@SUM(A1)", "\t=1", "\r=1"]
    rows = exported(pd.DataFrame({"prompt": starts}))
    assert [row["prompt"] for row in rows] == ["'" + cell for cell in starts]


def test_a_line_break_inside_a_cell_cannot_start_a_row_of_its_own():
    # Some spreadsheets end a row at a bare CR: unquoted, "=HYPERLINK" would open a row, unguarded.
    text = export.spreadsheet_csv(pd.DataFrame({"prompt": ["a cat\r=HYPERLINK(\"http://evil.example\")", "a\nb"]}))
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["prompt"], ["a cat\r=HYPERLINK(\"http://evil.example\")"], ["a\nb"]]


def test_ordinary_cells_and_numbers_are_exported_unchanged():
    frame = pd.DataFrame({"prompt": ["a cat", "a-b", "1 + 1", ""], "run_time": [-5.0, 2.5, 0.0, math.nan],
                          "outputs": [-1, 0, 1, 2]})
    rows = exported(frame)
    assert [row["prompt"] for row in rows] == ["a cat", "a-b", "1 + 1", ""]
    assert [row["run_time"] for row in rows] == ["-5.0", "2.5", "0.0", ""]
    assert [row["outputs"] for row in rows] == ["-1", "0", "1", "2"]
