"""Edit chains and batches through the pages (AppTest), as people use them: *Edit this image* on a
stored result opens Create with that image as the input of FLUX Kontext Pro (or of the chosen
model when it takes images) and Generate records the new prediction as its edit; the detail view
shows a chain of three generations as thumbnails linking to each other; History filters to a
chain or a batch, and names each prediction's batch.

The history is filled for real: creates to the stand-in, followed by a Tracker (support/history.py);
the batch is sent by a BatchRunner on the app's database."""

from __future__ import annotations

import base64
import io
import json
import time
from urllib.parse import parse_qs

import pytest
from PIL import Image, ImageChops, ImageStat

from comet.batch import Batches, BatchRunner, BatchSpec, plan
from comet.snippets import shorten_data_uris
from comet.store import HistoryFilter
from comet.ui import card
from comet.ui import history_view as view
from support.api import KEY, api_requests
from support.apptest import open_app, sent_body
from support.history import SCHNELL, history_page, table_element
from support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("app_env")
KONTEXT, FLUX2 = "black-forest-labs/flux-kontext-pro", "black-forest-labs/flux-2-pro"


def create_page(sim, query: dict | None = None):
    at = open_app(query=query, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert not at.exception, at.exception
    return at


def links(at) -> list[tuple[str, str, dict[str, list[str]]]]:
    """Every page link: (label, page's url path, query)."""
    return [(link.proto.label, link.proto.page, parse_qs(link.proto.query_string)) for link in at.get("page_link")]


def edit_links(at) -> list[dict[str, list[str]]]:
    return [query for label, page, query in links(at) if label == "Edit this image"]


def detail_links(at) -> set[str]:
    """The ids the page links to in History."""
    return {query["id"][0] for _label, page, query in links(at) if page == "history" and "id" in query}


def stored_uri(store, prediction_id: str, idx: int = 0) -> str:
    content_type, data = store.output_bytes(prediction_id, idx)
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def same_picture(shown: bytes, stored: bytes) -> bool:
    """The same picture, whatever its size and encoding (Streamlit scales and re-encodes it)."""
    with Image.open(io.BytesIO(shown)) as a, Image.open(io.BytesIO(stored)) as b:
        difference = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
        return max(ImageStat.Stat(difference).mean) < 6


def width(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return image.width


def generate(at):
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    assert not at.exception, at.exception
    return at


def edited(history, parent: str, prompt: str, idx: int = 0) -> str:
    """An edit of `parent`'s image `idx`, made and recorded as the Create page does, and settled."""
    prediction = history.client.create(KONTEXT, {"prompt": prompt, "input_image": stored_uri(history.store, parent, idx)})
    history.store.record(prediction, parent=(parent, idx))
    history.settle([prediction.id])
    return prediction.id


def new_rows(store, known: set[str]) -> list:
    return [store.get(pid) for pid in store.page()["id"] if pid not in known]


# ---- Edit this image ---------------------------------------------------------------------------


def test_edit_this_image_opens_create_with_kontext_and_generate_records_the_parent(sim, history):
    fox, = history.add("a red fox", num_outputs=2)
    detail = history_page(sim, fox)
    assert edit_links(detail) == [{"edit": [fox], "output": ["0"]}, {"edit": [fox], "output": ["1"]}]
    assert {page for label, page, _ in links(detail) if label == "Edit this image"} == {"create"}

    at = create_page(sim, {"edit": fox, "output": "1"})  # where the second link leads
    assert at.selectbox(key="model").value == KONTEXT
    uri = stored_uri(history.store, fox, 1)
    assert sent_body(at)["input"]["input_image"] == shorten_data_uris(uri)  # as stored (a small one), inline
    assert any("Editing" in md.value and fox[:8] in md.value and "image 2" in md.value for md in at.markdown)

    at.text_area(key="param.prompt").input("make it night").run()
    generate(at)
    wait_until(lambda: len(api_requests(sim, "POST")) == 2 and history.store.count() == 2)
    post = api_requests(sim, "POST")[-1]
    assert post["path"].endswith(f"/models/{KONTEXT}/predictions") and post["json"]["input"]["input_image"] == uri
    child, = new_rows(history.store, {fox})
    assert (child.parent_id, child.parent_output, child.model) == (fox, 1, KONTEXT)
    assert [link.id for link in history.store.lineage(fox).children] == [child.id]


def test_a_chosen_model_that_takes_images_is_kept_for_the_edit(sim, history):
    fox, = history.add("a red fox")
    at = create_page(sim)
    at.selectbox(key="model").select(FLUX2).run()
    at.query_params.update({"edit": fox, "output": "0"})
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="model").value == FLUX2
    assert sent_body(at)["input"]["input_images"] == [shorten_data_uris(stored_uri(history.store, fox))]


def test_a_model_that_takes_no_image_sends_none_and_records_no_parent(sim, history):
    fox, = history.add("a red fox")
    at = create_page(sim, {"edit": fox, "output": "0"})
    at.selectbox(key="model").select(SCHNELL).run()  # still selectable while editing
    assert "input_image" not in sent_body(at)["input"] and "takes no image" in " ".join(c.value for c in at.caption)
    at.text_area(key="param.prompt").input("a fox at night").run()
    generate(at)
    wait_until(lambda: history.store.count() == 2)
    other, = new_rows(history.store, {fox})
    assert other.parent_id is None and other.model == SCHNELL


def test_stop_editing_clears_the_image_and_the_link(sim, history):
    fox, = history.add("a red fox")
    at = create_page(sim, {"edit": fox, "output": "0"})
    at.button(key="images.stop_edit").click().run()
    assert not at.exception, at.exception
    assert "input_image" not in sent_body(at)["input"]
    assert not any("Editing" in md.value for md in at.markdown)
    assert "edit" not in at.query_params and at.selectbox(key="model").value == KONTEXT  # the model stays


@pytest.mark.parametrize("query, says", [
    ({"edit": "p0000000000000000000unknown", "output": "0"}, "not in this dashboard's history"),
    ({"edit": "../../etc/passwd", "output": "0"}, "not a stored image"),
    ({"edit": "FOX", "output": "-1"}, "not a stored image"),
])
def test_a_link_to_an_image_that_is_not_stored_says_so_and_the_page_is_a_normal_create(sim, history, query, says):
    fox, = history.add("a red fox")
    if query["edit"] == "FOX":
        query = {**query, "edit": fox}
    at = create_page(sim, query)
    assert any(says in warning.value for warning in at.warning)
    assert at.selectbox(key="model").value == SCHNELL and "input_image" not in sent_body(at)["input"]
    assert not any("Editing" in md.value for md in at.markdown)
    # The good case beside it: image 0 of the same prediction opens as an edit.
    good = create_page(sim, {"edit": fox, "output": "0"})
    assert not good.warning and good.selectbox(key="model").value == KONTEXT


def test_an_image_only_its_thumbnail_is_kept_of_cannot_be_edited(sim, history):
    fox, = history.add("a red fox")
    history.store.prune_media(before=time.time() + 60)  # retention removed the full image
    at = create_page(sim, {"edit": fox, "output": "0"})
    assert any("only its thumbnail is kept" in warning.value for warning in at.warning)
    assert at.selectbox(key="model").value == SCHNELL


# ---- the chain in the detail view and the table ------------------------------------------------


@pytest.fixture
def three_generations(history):
    """A fox, an edit of it, an edit of that; and an unrelated boat, and another edit of the fox."""
    fox, = history.add("a red fox")
    night = edited(history, fox, "make it night")
    snow = edited(history, night, "add snow")
    boat, = history.add("a paper boat")
    sibling = edited(history, fox, "make it a painting")
    return fox, night, snow, boat, sibling


def test_an_edit_chain_of_three_generations_is_shown_in_the_detail_view(sim, history, media, three_generations):
    fox, night, snow, _boat, sibling = three_generations
    at = history_page(sim, night)
    captions = [c.value for c in at.caption]
    assert "Chain" in captions
    assert {fox, snow} <= detail_links(at) and sibling not in detail_links(at)  # its chain, not a sibling's
    assert any(md.value == f"**{card.id_label(night)}**" for md in at.markdown)  # itself, marked, not a link
    _manager, storage = media[-1]
    shown = [storage.get_file(image.value[0].rsplit("/", 1)[-1]).content for image in at.get("image")]
    thumbnails = [history.store.thumbnail(pid, 0)[1] for pid in (fox, night, snow)]
    tiles = [data for data in shown if width(data) == view.CHAIN_TILE]
    assert len(tiles) == 3 and all(same_picture(*pair) for pair in zip(tiles, thumbnails, strict=True))  # oldest first
    assert not same_picture(tiles[0], thumbnails[2])  # the check can tell two generations apart
    assert {"parent, original", "this one", "edit"} <= set(captions)

    root = history_page(sim, fox)
    assert {night, sibling} <= detail_links(root)
    alone = history_page(sim, history.add("a kite")[0])  # in no chain: no Chain section
    assert "Chain" not in [c.value for c in alone.caption]


def test_an_edit_whose_parent_is_not_in_this_history_says_so(sim, history):
    made_elsewhere = "q4chw5rey9rmt0cww76t4h3ma4"
    prediction = history.client.create(KONTEXT, {"prompt": "make it night"})
    history.store.record(prediction, parent=(made_elsewhere, 0))
    history.settle([prediction.id])
    at = history_page(sim, prediction.id)
    assert any("which is not in this history" in c.value and made_elsewhere in c.value for c in at.caption)
    assert made_elsewhere not in detail_links(at)  # no link to a detail that does not exist


def test_history_filters_to_the_chain_shown_in_the_detail_view(sim, history, three_generations):
    fox, night, snow, boat, sibling = three_generations
    at = history_page(sim, night)
    at.button(key="history.show_chain").click().run()
    assert not at.exception, at.exception
    assert at.query_params.get("chain") in (night, [night])  # a link to share
    assert list(table_element(at).value["id"]) == [snow, night, fox]

    linked = history_page_with(sim, {"chain": fox})
    assert list(table_element(linked).value["id"]) == [sibling, snow, night, fox]  # every edit of the fox
    linked.button(key="history.clear_chain").click().run()
    assert list(table_element(linked).value["id"]) == [sibling, boat, snow, night, fox]

    bad = history_page_with(sim, {"chain": "not an id!"})
    assert any("chain filter is off" in warning.value for warning in bad.warning)
    assert len(table_element(bad).value) == 5


def history_page_with(sim, query: dict):
    at = open_app(page="pages/history.py", query=query, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert not at.exception, at.exception
    return at


# ---- batches in History ------------------------------------------------------------------------


def test_a_batchs_predictions_show_their_batch_in_history(sim, history):
    alone, = history.add("made on Create")
    batches = Batches(history.store)
    runner = BatchRunner(batches, create=history.client.create, poll=0.2,
                         track=lambda prediction, creator, batch_id: history.store.record(
                             prediction, creator=creator, batch_id=batch_id)).start()
    try:
        batch_id = runner.submit(plan(BatchSpec(prompts=("a fox", "a boat"), models=(SCHNELL,), variations=1, seed=5)),
                                 title="Foxes and boats")
        wait_until(lambda: not batches.get(batch_id).active)
    finally:
        runner.stop()
    sent = [cell.prediction_id for cell in batches.cells(batch_id)]
    history.settle(sent)

    at = history_page(sim)
    element = table_element(at)
    assert "batch" in list(element.proto.column_order)
    assert json.loads(element.proto.columns)["batch"]["label"] == "Batch"
    names = dict(zip(element.value["id"], element.value["batch"], strict=True))
    assert names == {sent[0]: "Foxes and boats", sent[1]: "Foxes and boats", alone: ""}

    filtered = history_page_with(sim, {"batch_filter": batch_id})
    assert set(table_element(filtered).value["id"]) == set(sent)
    assert filtered.selectbox(key=view.BATCH_SELECT_KEY).value == batch_id
    filtered.selectbox(key=view.BATCH_SELECT_KEY).select(None).run()  # "Any batch"
    assert len(table_element(filtered).value) == 3 and "batch_filter" not in filtered.query_params

    detail = history_page(sim, sent[0])
    assert ("Foxes and boats", "batch", {"batch": [batch_id]}) in links(detail)  # its contact sheet
    detail.button(key="history.show_batch").click().run()
    assert set(table_element(detail).value["id"]) == set(sent)
    assert history.store.count(HistoryFilter(batch=batch_id)) == 2


def test_without_batches_the_table_has_no_batch_column(sim, history):
    history.add("made on Create")
    at = history_page(sim)
    assert "batch" not in list(table_element(at).proto.column_order)
    assert view.BATCH_SELECT_KEY not in [box.key for box in at.selectbox]
