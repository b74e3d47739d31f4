"""The History page through AppTest, as its users meet it: the table of everything this dashboard
has run, its filters and pages, the detail behind a deep link, tracking a prediction made
elsewhere, cancelling one that runs, and the CSV / ZIP exports.

The history is filled the way the app fills it: real create calls to the stand-in, recorded in
the app's own SQLite file and followed to the end by a Tracker."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import time
import zipfile
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from comet import export
from comet.store import predictions
from comet.ui import history_view as view
from support.api import KEY, api_requests
from support.history import DEV, SCHNELL, app_settings, download, history_page, table_element
from support.waiting import rerun_until


def the_table(at):
    element = table_element(at)
    return element.value if element else None


def statuses(table) -> list[str]:
    """The status column: one coloured label per row."""
    return [str(labels[0]) for labels in table["status"]]


def shown(at) -> str:
    return "\n".join(str(getattr(element, "value", "")) for element in at.main)


def select_rows(at, *rows: int):
    """What ticking rows' boxes in the table sends."""
    at.session_state[table_element(at).key] = {"selection": {"rows": list(rows), "columns": [], "cells": []}}
    return at.run()


# ---- the table --------------------------------------------------------------------------------


def test_an_empty_history_says_so_kindly(sim):
    at = history_page(sim)
    assert any("No predictions yet" in info.value for info in at.info)
    assert the_table(at) is None
    assert api_requests(sim) == []


def test_rows_appear_newest_first_with_model_titles_and_statuses(sim, history):
    older = history.add("a red fox in snow")
    failed = history.add("[sim:fail] a broken vase", model=DEV)
    newest = history.add("a paper boat")
    at = history_page(sim)
    table = the_table(at)
    assert list(table["id"]) == newest + failed + older
    assert statuses(table) == ["succeeded", "failed", "succeeded"]
    assert list(table["model"]) == ["FLUX.1 [schnell]", "FLUX.1 [dev]", "FLUX.1 [schnell]"]
    assert table["prompt"].iloc[2] == "a red fox in snow"
    stored = base64.b64encode(history.store.thumbnail(newest[0], 0)[1]).decode()
    assert stored in table["thumbnail"].iloc[0]  # the stored image, small (in its square tile)
    assert table["run_time"].iloc[0].endswith(" s")
    assert "3 predictions" in shown(at)


def shown_columns(at) -> list[str]:
    """The table's columns as people see them, left to right, by their labels."""
    element = table_element(at)
    config = json.loads(element.proto.columns)
    return [config.get(name, {}).get("label", name) for name in element.proto.column_order]


def test_the_table_is_one_of_prediction_ids_and_statuses(sim, client, history):
    fox, = history.add("a red fox in snow")
    at = history_page(sim)
    assert shown_columns(at) == ["", "Status", "Prediction id", "Prompt", "Model", "Created", "Run", "Cost"]
    assert list(the_table(at)["id"]) == [fox]
    # A Creator column once someone signed in made one (without sign-in its room goes to the prompt).
    kite = client.create(SCHNELL, {"prompt": "a kite"})
    history.store.record(kite, creator="ana@example.com")
    history.settle([kite.id])
    at.run()
    assert shown_columns(at)[-1] == "Creator"
    assert list(the_table(at)["creator"]) == ["ana@example.com", ""]


def test_thumbnails_keep_their_shape_in_square_tiles(sim, history):
    wide, = history.add("a wide harbour", aspect_ratio="16:9")
    failed, = history.add("[sim:fail] a cracked mirror")
    table = the_table(history_page(sim))
    cell = dict(zip(table["id"], table["thumbnail"], strict=True))
    stored = base64.b64encode(history.store.thumbnail(wide, 0)[1]).decode()
    # The 16:9 thumbnail whole ("meet"), centred in a square tile, not cropped to fill the cell.
    assert cell[wide].startswith("data:image/svg+xml") and "width='128' height='128'" in cell[wide]
    assert f"preserveAspectRatio='xMidYMid meet' href='data:image/jpeg;base64,{stored}'" in cell[wide]
    assert cell[failed] == view.NO_THUMBNAIL  # the bare tile


def test_filters_by_status_model_and_prompt_text_narrow_the_table(sim, history):
    fox, = history.add("a red fox in snow")
    vase, = history.add("[sim:fail] a broken vase", model=DEV)
    boat, = history.add("a paper boat at dawn", model=DEV)
    at = history_page(sim)
    assert set(the_table(at)["id"]) == {fox, vase, boat}

    at.multiselect(key="history.status").select("failed").run()
    assert list(the_table(at)["id"]) == [vase]
    at.multiselect(key="history.status").unselect("failed").run()

    at.multiselect(key="history.model").select(DEV).run()
    assert list(the_table(at)["id"]) == [boat, vase]

    at.text_input(key="history.text").input("PAPER").run()  # case does not matter
    assert list(the_table(at)["id"]) == [boat]

    at.text_input(key="history.text").input("no such thing").run()
    assert the_table(at) is None
    assert any("Nothing matches these filters" in info.value for info in at.info)
    assert not at.exception


def test_more_than_fifty_rows_are_paged_and_a_new_filter_starts_on_page_one(sim, history):
    lanterns = history.add(*[f"[sim:fail] lantern {n}" for n in range(view.PAGE_SIZE + 2)])
    candles = history.add(*[f"[sim:fail] candle {n}" for n in range(3)])
    newest_first = (lanterns + candles)[::-1]
    at = history_page(sim)
    assert list(the_table(at)["id"]) == newest_first[: view.PAGE_SIZE]
    pager = at.number_input(key="history.page")
    assert "of 2" in pager.label
    pager.set_value(2).run()
    assert list(the_table(at)["id"]) == newest_first[view.PAGE_SIZE:]
    assert f"{view.PAGE_SIZE + 5} predictions" in shown(at)

    at.text_input(key="history.text").input("lantern").run()  # still two pages, of lanterns only
    assert at.number_input(key="history.page").value == 1
    assert list(the_table(at)["id"]) == lanterns[::-1][: view.PAGE_SIZE]  # the newest ones first
    at.number_input(key="history.page").set_value(2).run()
    at.text_input(key="history.text").input("candle").run()  # one page: no pager at all
    assert list(the_table(at)["id"]) == candles[::-1]
    assert not at.get("number_input")
    assert not at.exception


def test_paging_stays_quick_with_a_hundred_thousand_rows(sim, history):
    rows, start = 100_000, time.time() - 100_000
    # Bulk rows straight into the app's file: a hundred thousand API round trips would take minutes.
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(app_settings(sim).data_dir / "history.sqlite")))
    with engine.begin() as conn:
        conn.execute(sa.insert(predictions), [
            {"id": f"bulk{n:08d}", "model": SCHNELL if n % 2 else DEV, "status": "succeeded",
             "input": json.dumps({"prompt": f"bulk prompt {n}"}), "prompt": f"bulk prompt {n}",
             "created_at": start + n, "recorded_at": start + n, "updated_at": start + n,
             "tracking": "done", "run_time": 1.5}
            for n in range(rows)
        ])
    engine.dispose()
    at = history_page(sim)
    pages = math.ceil(rows / view.PAGE_SIZE)
    began = time.monotonic()
    at.number_input(key="history.page").set_value(pages).run()
    last_page = time.monotonic() - began
    assert list(the_table(at)["id"])[-1] == "bulk00000000"
    began = time.monotonic()
    at.text_input(key="history.text").input("prompt 99999").run()
    filtered = time.monotonic() - began
    assert list(the_table(at)["id"]) == ["bulk00099999"]
    print(f"last page {last_page:.2f} s, filtered {filtered:.2f} s")
    assert last_page < 3 and filtered < 3, (last_page, filtered)


# ---- the detail behind a deep link ------------------------------------------------------------


def test_a_deep_link_to_a_success_shows_its_images_downloads_and_exact_input(sim, history):
    pid, = history.add("two lanterns", num_outputs=2, seed=7)
    asked_before = len(api_requests(sim))
    at = history_page(sim, pid)
    assert "succeeded" in shown(at)
    assert len(at.get("image")) == 2
    downloads = [b for b in at.get("download_button") if b.label == "Download"]
    assert [b.proto.url.rsplit(".", 1)[-1] for b in downloads] == ["webp", "webp"]
    assert [json.loads(block.value) for block in at.code if block.language == "json"] == [
        {"input": {"prompt": "two lanterns", "num_outputs": 2, "seed": 7}}
    ]
    assert len(api_requests(sim)) == asked_before  # all of it came from the store


@pytest.mark.parametrize("bad_id", ["../../x", "<script>alert(1)</script>", "abc", "a" * 65, "x y z 1234"])
def test_a_malformed_deep_link_is_refused_before_anything_is_asked(sim, bad_id):
    at = history_page(sim, bad_id)
    assert any("is not a valid prediction id" in error.value for error in at.error)
    assert "<script>" not in shown(at)  # shown as text, escaped
    assert not at.get("image")
    assert api_requests(sim) == []


def test_a_deep_link_to_an_unknown_id_says_so_and_offers_to_track_it(sim, history):
    unknown = "q4chw5rey9rmt0cww76t4h3ma4"
    at = history_page(sim, unknown)
    assert any("is not in this dashboard's history" in w.value for w in at.warning)
    prefilled = [field for field in at.text_input if field.label == "Prediction id" and field.value == unknown]
    assert len(prefilled) == 1
    assert api_requests(sim) == []  # nothing asked until the user chooses to track
    next(b for b in at.button if b.form_id == "history.track-deep-link").click().run()
    assert any("does not know prediction" in error.value for error in at.error)
    assert [r["path"] for r in api_requests(sim)] == [f"/replicate/v1/predictions/{unknown}"]
    assert history.store.get(unknown) is None


def test_a_prediction_made_elsewhere_joins_the_history_when_tracked(sim, client, history):
    made_elsewhere = client.create(SCHNELL, {"prompt": "a kite made by a script"}).id
    at = history_page(sim)
    form_input = next(f for f in at.text_input if f.label == "Prediction id")
    form_input.input(f"  {made_elsewhere} ")  # a pasted id may carry spaces; sent with the form
    next(b for b in at.button if b.form_id == "history.track").click().run()
    assert not at.exception
    assert at.query_params.get("id") in (made_elsewhere, [made_elsewhere])
    assert history.store.get(made_elsewhere) is not None
    rerun_until(at, lambda at: at.get("image"))  # the app's tracker finishes it and keeps the image
    assert made_elsewhere in list(the_table(at)["id"])


def test_the_deep_link_offer_tracks_an_id_made_elsewhere(sim, client, history):
    made_elsewhere = client.create(SCHNELL, {"prompt": "a second kite"}).id
    at = history_page(sim, made_elsewhere)
    next(b for b in at.button if b.form_id == "history.track-deep-link").click().run()
    assert not at.exception
    assert history.store.get(made_elsewhere) is not None
    rerun_until(at, lambda at: at.get("image"))
    assert not at.warning


def test_tracking_a_malformed_id_is_refused_without_a_request(sim, history):
    at = history_page(sim)
    next(f for f in at.text_input if f.label == "Prediction id").input("../etc/passwd")
    next(b for b in at.button if b.form_id == "history.track").click().run()
    assert any("is not a valid prediction id" in error.value for error in at.error)
    assert api_requests(sim) == []


def test_a_failed_prediction_shows_its_error_text(sim, history):
    pid, = history.add("[sim:fail] a cracked mirror")
    at = history_page(sim, pid)
    assert any("simulated model error" in error.value for error in at.error)
    assert not at.get("image")


def test_a_running_prediction_shows_progress_and_can_be_cancelled(sim, history):
    pid, = history.add("[sim:slow] a long exposure", settle=False)
    at = history_page(sim, pid)
    rerun_until(at, lambda at: at.get("progress") and any(e.label == "Logs" for e in at.expander))
    at.button(key=f"detail-{pid}-cancel").click().run()
    assert not at.exception
    assert len(api_requests(sim, "POST", "/cancel")) == 1
    assert history.store.get(pid).status == "canceled"
    at.run()
    assert "canceled" in shown(at)
    assert not [b for b in at.button if b.key == f"detail-{pid}-cancel"]


def test_where_the_server_cannot_cancel_the_page_says_so(sim, history):
    sim.cancel_supported = False
    pid, = history.add("[sim:slow] a very long exposure", settle=False)
    at = history_page(sim, pid)
    at.button(key=f"detail-{pid}-cancel").click().run()
    assert not at.exception
    assert any("cannot cancel" in warning.value for warning in at.warning)
    assert history.store.get(pid).status in ("starting", "processing")


def test_the_cannot_cancel_message_outlasts_the_next_tick(sim, history):
    sim.cancel_supported = False
    pid, = history.add("[sim:slow] an endless exposure", settle=False)
    at = history_page(sim, pid)
    at.button(key=f"detail-{pid}-cancel").click().run()
    at.run()  # what the running card's timer does a second later
    assert any("cannot cancel" in warning.value for warning in at.warning)


def test_use_again_takes_the_input_back_to_the_create_form(sim, history):
    pid, = history.add("a blue heron", model=DEV, aspect_ratio="16:9")
    at = history_page(sim, pid)
    at.button(key=f"detail-{pid}-reuse").click().run()
    assert not at.exception
    assert at.selectbox(key="model").value == DEV
    assert at.text_area(key="param.prompt").value == "a blue heron"
    assert at.selectbox(key="param.aspect_ratio").value == "16:9"


def test_the_page_refreshes_while_something_runs_and_then_stops(sim, history):
    sim.configure(start_delay=0.5, run_time=1.5)
    pid, = history.add("a quick sketch", settle=False)
    at = history_page(sim)
    assert "this page updates by itself" in shown(at)
    assert statuses(the_table(at)) in (["starting"], ["processing"])
    rerun_until(at, lambda at: statuses(the_table(at)) == ["succeeded"]
                and "data:image/jpeg;base64," in the_table(at)["thumbnail"].iloc[0])
    # The row reads succeeded a moment before the tracker lets go of it (it still files the
    # images); the timer stops with the first run after that, not necessarily this one.
    rerun_until(at, lambda at: history.store.get(pid).tracking == "done"
                and "this page updates by itself" not in shown(at), timeout=10)


def test_selecting_one_row_opens_its_detail_and_back_closes_it(sim, history):
    first, _ = history.add("a lighthouse", "a harbour")
    at = select_rows(history_page(sim), 1)  # the second row: the older one
    assert at.query_params.get("id") in (first, [first])
    assert len(at.get("image")) == 1
    at.button(key="history.close").click().run()
    assert not at.query_params.get("id")
    assert not at.get("image")  # a kept selection does not reopen it


def test_rows_that_shift_under_a_selection_do_not_open_another_prediction(sim, history):
    first, second = history.add("a lighthouse", "a harbour")
    at = select_rows(history_page(sim), 1)
    at.button(key="history.close").click().run()
    newcomer, = history.add("a newcomer")  # made elsewhere: every row moves down by one
    at.run()
    assert list(the_table(at)["id"]) == [newcomer, second, first]
    assert not at.query_params.get("id"), "a prediction nobody selected was opened"
    assert at.get("download_button")[1].label.startswith("Select rows")  # and nothing else is selected


# ---- exports ---------------------------------------------------------------------------------


def test_the_csv_export_holds_the_filtered_rows_and_never_the_key(sim, history, media):
    fox, = history.add("a red fox")
    vase, = history.add("[sim:fail] a broken vase")
    at = history_page(sim)
    rows = list(csv.DictReader(io.StringIO(download(at, media, "Export table as CSV").decode())))
    assert [row["id"] for row in rows] == [vase, fox]
    assert json.loads(rows[1]["input"]) == {"prompt": "a red fox"}
    at.multiselect(key="history.status").select("failed").run()
    exported = download(at, media, "Export table as CSV").decode()
    assert [row["id"] for row in csv.DictReader(io.StringIO(exported))] == [vase]
    assert KEY not in exported


def test_the_csv_has_clean_utc_times_and_names_the_stored_copies(sim, history, media):
    boat, = history.add("a paper boat", num_outputs=2)
    vase, = history.add("[sim:fail] a broken vase")
    at = select_rows(history_page(sim), 0, 1)  # both: the vase (newest) and the boat
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(download(at, media, "Export table").decode()))}
    record = history.store.get(boat)
    for name in ("created_at", "started_at", "completed_at"):
        shown = rows[boat][name]  # e.g. 2026-05-03T05:26:20.165Z, not 05:26:20.164999962+00:00
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", shown), shown
        assert abs(datetime.fromisoformat(shown) - getattr(record, name)) <= timedelta(microseconds=500)
    assert re.fullmatch(r"\d+(\.\d{1,3})?", rows[boat]["run_time"])
    # Where the stored copies are: the files of the ZIP export, which outlive the upstream links.
    archive = zipfile.ZipFile(io.BytesIO(download(at, media, "Images of 2 selected")))
    images = sorted(name for name in archive.namelist() if not name.endswith("input.json"))
    assert json.loads(rows[boat]["stored_outputs"]) == images == [f"{boat}/0.webp", f"{boat}/1.webp"]
    assert json.loads(rows[vase]["stored_outputs"]) == []
    assert "output_urls" not in rows[boat]
    assert json.loads(rows[boat][export.UPSTREAM_URLS_COLUMN]) == record.output_urls  # kept, named as expiring


def test_a_prompt_that_looks_like_a_formula_is_exported_as_text(sim, history, media):
    history.add("=HYPERLINK(\"http://evil.example\",\"click\")", "@SUM(A1:A9)", "+1 a cat", "a plain cat")
    at = history_page(sim)
    prompts = [row["prompt"] for row in csv.DictReader(io.StringIO(download(at, media, "Export table").decode()))]
    assert prompts == ["a plain cat", "'+1 a cat", "'@SUM(A1:A9)", "'=HYPERLINK(\"http://evil.example\",\"click\")"]


def test_the_zip_of_a_selection_holds_each_image_and_its_input(sim, history, media):
    boats = history.add("a paper boat", num_outputs=2)
    kite = history.add("a kite")
    at = history_page(sim)
    assert at.get("download_button")[1].proto.disabled  # nothing selected yet
    at = select_rows(at, 0, 1)
    archive = zipfile.ZipFile(io.BytesIO(download(at, media, "Images of 2 selected")))
    names = sorted(archive.namelist())
    pid, = boats
    assert names == sorted([f"{kite[0]}/input.json", f"{kite[0]}/0.webp",
                            f"{pid}/input.json", f"{pid}/0.webp", f"{pid}/1.webp"])
    assert archive.read(f"{pid}/1.webp") == history.store.output_bytes(pid, 1)[1]
    assert json.loads(archive.read(f"{pid}/input.json")) == {"input": {"prompt": "a paper boat", "num_outputs": 2}}


def test_a_selection_too_large_for_one_zip_downloads_in_parts_of_whole_predictions(sim, history, media, monkeypatch):
    boat, = history.add("a paper boat", num_outputs=2)
    kite, = history.add("a kite")
    sizes = history.store.stored_sizes([boat, kite, "nothingstoredhere"])
    assert sizes == {pid: sum(o.size for o in history.store.get(pid).outputs) for pid in (boat, kite)}
    monkeypatch.setattr(export, "ZIP_PART_BYTES", max(sizes.values()))  # one prediction per part

    at = select_rows(history_page(sim), 0, 1)
    labels = [b.label for b in at.get("download_button") if b.label.startswith("Part ")]
    assert labels == ["Part 1 of 2 · 1 prediction", "Part 2 of 2 · 1 prediction"]
    folders = [{name.split("/")[0] for name in zipfile.ZipFile(io.BytesIO(download(at, media, label))).namelist()}
               for label in labels]
    assert folders == [{kite}, {boat}]  # the table's order (newest first), each whole
