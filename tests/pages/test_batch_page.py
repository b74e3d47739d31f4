"""The Batch page: what a batch would send (count, estimate) before anything is sent, nonsense
refused with its message and nothing sent, `Run batch` handing the cells to the server's runner
(the stand-in receives exactly the planned creates, swept values included), the contact sheet
filling in with its progress, Cancel batch, the downloads, and no batches with a personal key."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from PIL import Image

from comet import sheet
from comet.batch import CANCELED, SENT, Batches
from comet.prediction import Prediction
from comet.store import Store
from support.api import KEY, api_requests
from support.apptest import open_app
from support.history import app_settings, download
from support.waiting import rerun_until, wait_until

pytestmark = pytest.mark.usefixtures("app_env")
BATCH = "pages/batch.py"
SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"


def batch_page(sim, **extra):
    at = open_app(page=BATCH, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url, **extra)
    assert not at.exception, at.exception
    return at


def prompts(at, *lines: str):
    at.text_area(key="batch.prompts").input("\n".join(lines)).run()
    return at


def run_button(at):
    found = [b for b in at.button if b.label == "Run batch"]
    return found[0] if found else None


def markdown(at) -> str:
    return " ".join(str(m.value) for m in at.markdown).replace("\\", "").replace("**", "")


def errors(at) -> str:
    return " ".join(str(e.value) for e in at.error).replace("\\", "")


def creates(sim) -> list[dict]:
    return api_requests(sim, "POST", "/models/")


def progress_text(at) -> str:
    bars = at.get("progress")
    return bars[0].proto.text if bars else ""


def opened(at) -> str:
    """The batch the page shows (?batch=)."""
    value = at.query_params["batch"]
    return value[0] if isinstance(value, list) else value


def all_done(count: int):
    return lambda at: progress_text(at).startswith(f"{count} of {count} done") and len(at.image) == count


def test_the_page_shows_how_many_predictions_and_their_estimated_cost_before_sending(sim):
    at = prompts(batch_page(sim), "a red fox", "a paper boat", "a lighthouse")
    at.number_input(key="batch.variations").set_value(2).run()
    assert "6 predictions · estimated $0.018" in markdown(at)  # 6 x flux-schnell's $0.003
    assert not at.error and run_button(at) is not None and not run_button(at).disabled
    at.multiselect(key="batch.models").select(DEV).run()
    assert "12 predictions · estimated $0.168" in markdown(at)  # 6 x ($0.003 + $0.025)
    assert creates(sim) == []  # planning sends nothing


@pytest.mark.parametrize("setup, message", [
    (lambda at: at.number_input(key="batch.variations").set_value(101),
     "202 predictions is more than the maximum of 200 per batch"),
    (lambda at: at.multiselect(key="batch.models").set_value([DEV]).run().selectbox(key="batch.axis1")
     .set_value("guidance").run().text_input(key="batch.values1").input("2, strong"),
     "Guidance: 'strong' is not a number."),
    (lambda at: at.multiselect(key="batch.models").set_value([DEV]).run().selectbox(key="batch.axis1")
     .set_value("guidance").run().text_input(key="batch.values1").input("4, 12"),
     "FLUX.1 [dev]: Guidance must be between 0 and 10 (got 12)."),
])
def test_nonsense_is_refused_with_its_message_and_nothing_is_sent(sim, setup, message):
    at = prompts(batch_page(sim), "a red fox", "a paper boat")
    setup(at).run()
    assert message in errors(at)
    assert "nothing was sent" in errors(at)
    assert run_button(at).disabled
    assert "batch" not in at.query_params
    assert creates(sim) == []


def test_the_maximum_per_batch_is_the_operators_setting(sim):
    at = prompts(batch_page(sim, COMET_BATCH_MAX="5"), "a red fox", "a paper boat", "a lighthouse")
    at.number_input(key="batch.variations").set_value(2).run()
    assert "6 predictions is more than the maximum of 5 per batch" in errors(at)
    assert run_button(at).disabled
    at.number_input(key="batch.variations").set_value(1).run()
    assert not at.error and not run_button(at).disabled


def test_run_batch_with_three_prompts_by_two_variations_creates_six_predictions_and_fills_the_sheet(sim):
    at = prompts(batch_page(sim), "a red fox", "a paper boat", "a lighthouse")
    at.number_input(key="batch.variations").set_value(2).run()
    run_button(at).click().run()
    assert not at.exception, at.exception
    batch_id = opened(at)
    rerun_until(at, all_done(6), timeout=30)

    assert len(creates(sim)) == 6
    sent = [r["json"]["input"] for r in creates(sim)]
    assert sorted(body["prompt"] for body in sent) == sorted(["a red fox", "a paper boat", "a lighthouse"] * 2)
    assert len({(body["prompt"], body["seed"]) for body in sent}) == 6  # two seeds per prompt
    assert "6 of 6 done · 6 sent · 6 succeeded · 0 failed · 0 pending" in progress_text(at)
    shown = markdown(at)
    for label in ("a red fox", "a paper boat", "a lighthouse"):  # the sheet's rows
        assert label in shown
    links = [link for link in at.get("page_link") if link.proto.label == "Open"]
    assert len(links) == 6  # each cell links to its History detail
    # The batch is the page's link: opened afresh, the same sheet is drawn.
    again = open_app(page=BATCH, query={"batch": batch_id}, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert "6 of 6 done" in progress_text(again) and len(again.image) == 6
    assert len(creates(sim)) == 6  # opening it sends nothing
    # "Show in History" opens the table filtered to this batch's six predictions (not the
    # prediction made outside it).
    outside = Store.for_settings(app_settings(sim))
    outside.record(Prediction(id="notinbatch0000000000000000", model=SCHNELL, status="succeeded",
                              input={"prompt": "made on the Create page"}))
    outside.close()
    (history,) = [link for link in again.get("page_link") if link.proto.label == "Show in History"]
    assert history.proto.query_string == f"batch_filter={batch_id}"
    table = open_app(page="pages/history.py", query={"batch_filter": batch_id}, COMETAPI_KEY=KEY,
                     COMETAPI_BASE_URL=sim.url)
    assert not table.exception and "6 predictions" in " ".join(str(c.value) for c in table.caption)


def test_a_sweep_over_three_guidance_values_sends_those_values(sim):
    at = prompts(batch_page(sim), "a lighthouse at dusk")
    at.multiselect(key="batch.models").set_value([DEV]).run()
    at.selectbox(key="batch.axis1").set_value("guidance").run()
    at.text_input(key="batch.values1").input("1.5, 3, 4.5").run()
    assert "3 predictions" in markdown(at) and not at.error
    run_button(at).click().run()
    rerun_until(at, all_done(3), timeout=30)

    bodies = [r["json"]["input"] for r in creates(sim)]
    assert sorted(body["guidance"] for body in bodies) == [1.5, 3, 4.5]
    assert len({body["seed"] for body in bodies}) == 1  # only the swept value differs
    shown = markdown(at)
    assert all(f"Guidance {value}" in shown for value in ("1.5", "3", "4.5"))  # the sheet's columns


def test_a_csv_of_inputs_makes_the_rows_and_one_that_does_not_fit_the_models_is_refused(sim):
    at = batch_page(sim)
    at.multiselect(key="batch.models").set_value([DEV]).run()
    at.file_uploader(key="batch.csv").set_value(
        ("rows.csv", b"prompt,guidance,seed\na harbour at dawn,2.5,77\na bridge,,\n", "text/csv")).run()
    assert "2 predictions" in markdown(at) and not at.error
    run_button(at).click().run()
    rerun_until(at, all_done(2), timeout=30)
    sent = {r["json"]["input"]["prompt"]: r["json"]["input"] for r in creates(sim)}
    assert sent["a harbour at dawn"]["guidance"] == 2.5 and sent["a harbour at dawn"]["seed"] == 77
    assert sent["a bridge"]["guidance"] == 3  # flux-dev's own default where the row leaves it empty

    at.multiselect(key="batch.models").set_value([SCHNELL]).run()  # flux-schnell takes no guidance
    assert "'guidance' is not a parameter of the chosen models" in errors(at)
    assert run_button(at).disabled and len(creates(sim)) == 2


def test_the_swept_parameter_is_one_every_chosen_model_takes(sim):
    at = batch_page(sim)
    assert "Guidance" not in at.selectbox(key="batch.axis1").options  # flux-schnell has no guidance
    at.multiselect(key="batch.models").set_value([DEV]).run()
    assert "Guidance" in at.selectbox(key="batch.axis1").options


def test_cancel_batch_stops_the_cells_not_yet_sent(sim, app_env):
    sim.configure(create_delay=0.8)  # one create at a time, each a while: most cells are still unsent
    at = prompts(batch_page(sim, COMET_BATCH_CONCURRENCY="1"), "one", "two", "three", "four")
    at.number_input(key="batch.variations").set_value(2).run()
    run_button(at).click().run()
    batch_id = opened(at)
    next(b for b in at.button if b.label == "Cancel batch").click().run()
    assert not at.exception, at.exception
    notice = " ".join(str(i.value) for i in at.info)
    assert "Batch canceled" in notice and "not yet sent will not be sent" in notice

    store = Store.for_settings(app_settings(sim))
    try:
        batches = Batches(store)
        wait_until(lambda: not batches.get(batch_id).active)
        cells = batches.cells(batch_id)
        canceled = [cell for cell in cells if cell.state == CANCELED]
        sent = [cell for cell in cells if cell.state == SENT]
        assert len(canceled) >= 5 and len(sent) + len(canceled) == 8
        # The sheet says so, and once the sent ones have ended there is nothing left to cancel.
        rerun_until(at, lambda at: not [b for b in at.button if b.label == "Cancel batch"])
        assert " 0 pending" in progress_text(at) and "canceled" in progress_text(at), progress_text(at)
        assert len(creates(sim)) == len(sent)  # what was canceled never reached the API
    finally:
        store.close()


def test_a_finished_batch_sends_what_failed_again_and_what_may_exist_only_after_a_warning(sim):
    sim.add_fault("create", "500")  # no clear answer: it may have been made (and billed)
    sim.add_fault("create", "500-invalid")  # refused for sure
    at = prompts(batch_page(sim, COMET_BATCH_CONCURRENCY="1"), "frost")
    at.number_input(key="batch.variations").set_value(3).run()
    run_button(at).click().run()
    rerun_until(at, lambda at: progress_text(at).startswith("3 of 3 done") and len(at.image) == 1)
    assert "1 failed" in progress_text(at) and "1 unknown" in progress_text(at), progress_text(at)
    assert len(creates(sim)) == 3

    at.button(key="batch.again").click().run()  # "Send 1 not sent again"
    assert not at.exception, at.exception
    assert "Sending 1 cell again" in " ".join(str(i.value) for i in at.info)
    rerun_until(at, lambda at: len(at.image) == 2)
    assert len(creates(sim)) == 4 and "0 failed" in progress_text(at)
    assert not [b for b in at.button if b.key == "batch.again"]  # nothing failed is left

    at.button(key="batch.again_unknown").click().run()  # asks first; nothing sent yet
    warning = " ".join(str(w.value) for w in at.warning).replace("**", "")
    assert "may have been made, and billed, already" in warning
    at.button(key="batch.again_unknown_keep").click().run()
    assert not at.warning and len(creates(sim)) == 4  # kept: nothing sent
    at.button(key="batch.again_unknown").click().run()
    at.button(key="batch.again_unknown_confirm").click().run()
    rerun_until(at, all_done(3))
    assert len(creates(sim)) == 5 and "0 unknown" not in progress_text(at)
    assert not [b for b in at.button if (b.key or "").startswith("batch.again")]


def test_downloads_hold_the_sheet_as_one_image_and_every_output_with_a_csv_of_inputs(sim, media):
    at = prompts(batch_page(sim), "a red fox", "a paper boat")
    at.number_input(key="batch.variations").set_value(2).run()
    run_button(at).click().run()
    rerun_until(at, all_done(4), timeout=30)

    png = Image.open(io.BytesIO(download(at, media, "Download sheet")))
    assert png.format == "PNG" and png.size == sheet.Layout(rows=2, columns=2).size
    archive = zipfile.ZipFile(io.BytesIO(download(at, media, "Download all")))
    rows = list(csv.DictReader(io.StringIO(archive.read("cells.csv").decode())))
    assert sorted(row["row_label"] for row in rows) == ["a paper boat"] * 2 + ["a red fox"] * 2
    assert {row["state"] for row in rows} == {"sent"} and {row["status"] for row in rows} == {"succeeded"}
    images = [name for name in archive.namelist() if name != "cells.csv"]
    assert len(images) == 4 and {name.split("/")[0] for name in images} == {row["prediction_id"] for row in rows}
    sent = sorted(r["json"]["input"]["seed"] for r in creates(sim))
    assert sorted(int(row["seed"]) for row in rows) == sent


def test_a_lowered_spending_limit_replaces_the_batch_runner_and_the_old_one_sends_nothing_more(
        sim, app_env, monkeypatch):
    from comet.batch import REFUSED, BatchSpec, plan
    from comet.config import Settings
    from comet.ui import context

    def runner(limit: str):
        monkeypatch.setenv("SPEND_LIMIT_MONTHLY", limit)
        return context.shared_connection(Settings.from_sources({"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url})
                                         ).batch_runner

    before = runner("1.00")
    assert before.sending and runner("1.00") is before  # the same settings: the same runner
    after = runner("0.0061")  # the operator lowers the limit to two schnell images
    assert after is not before and after.sending
    assert not before.sending  # it would have kept sending under the old limit

    batch_id = after.submit(core_plan := plan(BatchSpec(prompts=("dune",), models=(SCHNELL,), variations=5, seed=7)))
    assert len(core_plan.cells) == 5
    wait_until(lambda: not after.batches.get(batch_id).active)
    assert [cell.state for cell in after.batches.cells(batch_id)].count(REFUSED) == 3
    assert len(creates(sim)) == 2


def test_a_batch_too_large_for_one_zip_downloads_in_parts_of_whole_cells(sim, media, monkeypatch):
    from comet import export

    at = prompts(batch_page(sim), "a red fox", "a paper boat")
    at.number_input(key="batch.variations").set_value(2).run()
    run_button(at).click().run()
    rerun_until(at, all_done(4), timeout=30)
    assert [b.label for b in at.get("download_button") if b.label.startswith("Download all")] == ["Download all (ZIP)"]

    monkeypatch.setattr(export, "ZIP_PART_BYTES", 1)  # every image is "too large": a part per cell
    at.run()
    labels = [b.label for b in at.get("download_button") if b.label.startswith("Part ")]
    assert labels == [f"Part {n} of 4 · cells {n}–{n}" for n in range(1, 5)]
    images, rows = [], []
    for label in labels:
        archive = zipfile.ZipFile(io.BytesIO(download(at, media, label)))
        rows += list(csv.DictReader(io.StringIO(archive.read("cells.csv").decode())))
        images += [name for name in archive.namelist() if name != "cells.csv"]
    assert len(rows) == 4 and len({row["prediction_id"] for row in rows}) == 4  # each cell once
    assert sorted(name.split("/")[0] for name in images) == sorted(row["prediction_id"] for row in rows)


def test_a_visitor_with_their_own_key_cannot_run_a_batch(sim):
    at = batch_page(sim)
    assert run_button(at) is not None  # with the server's key: the button is there
    at.text_input(key="own.typed").input("sk-my-own-key-0000000000").run()
    next(b for b in at.sidebar.button if b.label == "Use this key").click().run()
    assert not at.exception, at.exception
    assert run_button(at) is None
    assert "not available while you use your own key" in " ".join(str(i.value) for i in at.info).replace("\\", "")
    assert creates(sim) == []


def test_a_link_to_no_batch_says_so(sim):
    for wrong in ("../../etc", "0" * 32):
        at = open_app(page=BATCH, query={"batch": wrong}, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
        assert not at.exception and at.warning
