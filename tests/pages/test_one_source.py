"""What two places show must agree, because each comes from one source (issue #13): the Create
page flags a large inline image the same way beside the upload and in the request's check, at
the same size; and a status has the same look on a prediction's card as in the History table."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comet import catalog
from comet.prediction import KNOWN_STATUSES, Prediction
from support.api import KEY
from support.apptest import open_app
from support.history import history_page, table_element
from support.waiting import wait_until

KONTEXT_PRO = "black-forest-labs/flux-kontext-pro"


def png_of(size: int) -> bytes:
    """A readable PNG of exactly `size` bytes (a text chunk takes up the rest)."""
    def made(pad: int) -> bytes:
        info = PngInfo()
        info.add_text("pad", "x" * pad)
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, "PNG", pnginfo=info)
        return buffer.getvalue()

    data = made(size - len(made(0)))
    assert len(data) == size
    return data


def size_warnings(at) -> list[str]:
    return [w.value for w in at.warning if "KB may be refused" in w.value.replace("\\", "")]


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize(("size", "flagged"),
                         [(catalog.DATA_URI_MAX_BYTES, False), (catalog.DATA_URI_MAX_BYTES + 1, True)])
def test_an_image_is_flagged_beside_the_upload_and_in_the_json_from_the_same_size(sim, size, flagged):
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    at.selectbox(key="model").select(KONTEXT_PRO).run()
    at.toggle(key="images.shrink").set_value(False).run()
    at.file_uploader[0].set_value(("edge.png", png_of(size), "image/png")).run()
    beside_upload = size_warnings(at)

    at.toggle(key="raw.on").set_value(True).run()  # the same image, now in the request's JSON
    assert json.loads(at.text_area(key="raw.text").value)["input"]["input_image"].startswith("data:image/png")
    in_json = size_warnings(at)

    assert not at.exception
    assert (len(beside_upload), len(in_json)) == ((1, 1) if flagged else (0, 0)), (beside_upload, in_json)


def badge(at) -> tuple[str, str]:
    """(colour, label) of the card's status badge, e.g. ("red", "failed")."""
    for element in at.markdown:
        text = element.value
        if text.startswith(":") and "-badge[:material/" in text and "Live" not in text:
            colour, _, rest = text[1:].partition("-badge[")
            return colour, rest.rstrip("]").split(": ", 1)[1]
    raise AssertionError("no status badge on the card")


def table_colours(at) -> dict[str, str]:
    """The History table's status labels -> their colours."""
    config = json.loads(table_element(at).proto.columns)["status"]["type_config"]
    return {option["value"]: option["color"] for option in config["options"]}


def test_each_status_looks_the_same_on_its_card_and_in_the_table(sim, history):
    # One prediction per status: running ones on the stand-in (so they stay so while the page
    # looks), the finished ones as the tracker would have recorded them.
    sim.configure(start_delay=60.0)
    [starting] = history.add("waiting for a worker", settle=False)
    sim.configure(start_delay=0.0, run_time=60.0)
    [processing] = history.add("running", settle=False)
    wait_until(lambda: sim.get_prediction(processing)["status"] == "processing")
    ids = {"starting": starting, "processing": processing}
    for n, status in enumerate(s for s in KNOWN_STATUSES if s not in ids):
        ids[status] = f"finished{status}{n:0>{26 - len('finished') - len(status)}}"
        history.store.record(Prediction.from_json({"id": ids[status], "model": "black-forest-labs/flux-schnell",
                                                    "status": status, "input": {"prompt": status}}))
    seen = {}
    for status, pid in ids.items():
        at = history_page(sim, pid)
        colour, label = badge(at)
        seen[status] = (colour, label, table_colours(at).get(label))

    assert [label for _, label, _ in seen.values()] == list(ids), "each card names its status"
    assert all(table for _, _, table in seen.values()), "the table has a coloured label for each"
    # One map behind both: statuses share a table colour exactly when they share a badge colour.
    for a, (badge_a, _, table_a) in seen.items():
        for b, (badge_b, _, table_b) in seen.items():
            assert (badge_a == badge_b) == (table_a == table_b), (a, seen[a], b, seen[b])
