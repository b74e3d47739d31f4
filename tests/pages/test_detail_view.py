"""The detail behind /history?id=, through AppTest, as people use it: the prompt first and as
text, what was sent listed in words, input images shown when they came inline (a link shown as
text and never loaded), big inline images shortened in the JSON view but whole in the download,
and the results at their natural size, never stretched.

The history is filled for real (create calls to the stand-in, followed by a Tracker): see
support/history.py. Last, the note shown when retention removed a result's full image."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time

import pytest
import sqlalchemy as sa
from PIL import Image
from streamlit.testing.v1 import local_script_runner

from comet.config import Settings
from comet.store import Store
from comet.ui import history_view as view
from support.api import KEY
from support.apptest import open_app
from support.history import DEV, download, history_page
from support.media import saved

KONTEXT, FLUX2 = "black-forest-labs/flux-kontext-pro", "black-forest-labs/flux-2-pro"


def png_uri(size=(300, 200), color=(200, 80, 40)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def noisy_png_uri(size=(300, 200)) -> str:
    """A PNG of noise, which does not compress: a data URI of about 240 KB, like a photo's."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def as_read(markdown: str) -> str:
    """What a reader sees of markdown that safe.plain() escaped."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "").replace("  \n", "\n")


def in_order(node):
    """The page's elements top to bottom (blocks such as columns and the card opened up)."""
    for key in sorted(getattr(node, "children", {})):
        child = node.children[key]
        if getattr(child, "children", None):
            yield from in_order(child)
        else:
            yield child


def listed(at, heading: str) -> dict[str, str]:
    """The "label: value" list under one of the detail's small headings."""
    elements = list(in_order(at.main))
    start = next(n for n, e in enumerate(elements) if e.type == "caption" and e.value == heading)
    items = next(e for e in elements[start + 1:] if e.type == "markdown")
    found = re.findall(r"^- (.*?): (.*)$", as_read(items.value), re.MULTILINE)
    return {label: value.strip("*") for label, value in found}


def served(media, url: str) -> bytes:
    """The bytes the browser gets for an image element's URL."""
    _manager, storage = media[-1]
    return storage.get_file(url.rsplit("/", 1)[-1]).content


@pytest.fixture
def sent_elements(monkeypatch):
    """Every element the last AppTest run sent, with the width settings the element tree drops."""
    sent: list = []
    parse = local_script_runner.parse_tree_from_messages

    def recording(messages):
        sent[:] = [m.delta.new_element for m in messages
                   if m.HasField("delta") and m.delta.WhichOneof("type") == "new_element"]
        return parse(messages)

    monkeypatch.setattr(local_script_runner, "parse_tree_from_messages", recording)
    return sent


def test_the_prompt_comes_first_as_text(sim, history):
    prompt = "a heron in *shallow* water, <b>dawn</b> [light](https://example.com)"
    pid, = history.add(prompt, model=DEV)
    at = history_page(sim, pid)
    elements = list(in_order(at.main))
    prompt_at = next(n for n, e in enumerate(elements) if e.type == "markdown" and as_read(e.value) == prompt)
    first_image = next(n for n, e in enumerate(elements) if e.type == "image")
    assert prompt_at < first_image  # above the result, shown literally (no emphasis, no HTML, no link)
    assert "[light](https://example.com)" not in elements[prompt_at].value


def test_the_parameters_sent_are_listed_by_their_catalog_labels(sim, history):
    pid, = history.add("a blue heron", model=DEV, aspect_ratio="16:9", num_outputs=2, seed=7, go_fast=False,
                       lora_scale_x=0.5)
    at = history_page(sim, pid)
    assert listed(at, "Parameters") == {
        "Aspect ratio": "16:9", "Number of outputs": "2", "Seed": "7", "Go fast": "off",
        "lora_scale_x": "0.5",  # a parameter the catalog does not know: by its own name
    }
    assert any(code.value == pid for code in at.code)  # the id, in a block with a copy button


def test_an_inline_input_image_is_shown_as_a_thumbnail(sim, history, media):
    uri = png_uri((320, 160), color=(200, 80, 40))
    pid, = history.add("make the sky purple", model=KONTEXT, input_image=uri, seed=3)
    at = history_page(sim, pid)
    thumbnails = [image for image in at.get("image") if image.captions[0].startswith("PNG")]
    assert [image.captions[0] for image in thumbnails] == [f"PNG · 320×160 · {len(base64.b64decode(uri[22:]))} B"]
    with Image.open(io.BytesIO(served(media, thumbnails[0].value[0]))) as shown:
        assert shown.size == (view.INPUT_THUMB_WIDTH, view.INPUT_THUMB_WIDTH // 2)  # small, its shape kept
        pixel = shown.convert("RGB").getpixel((80, 40))
        # The same picture (a JPEG of it).
        assert all(abs(got - sent) <= 3 for got, sent in zip(pixel, (200, 80, 40), strict=True))
    assert listed(at, "Parameters") == {"Seed": "3"}  # the image is shown as an image, not as text


def test_a_linked_input_image_is_shown_as_text_and_never_loaded(sim, history):
    link = f"{sim.url}/never-fetched/cat.jpg"  # on the stand-in, which logs every request it gets
    unreadable = "data:image/png;base64,AAAA"
    pid, = history.add("turn them into one watercolour", model=FLUX2, input_images=[png_uri(), link, unreadable])
    at = history_page(sim, pid)
    assert link in [code.value for code in at.code]
    images = at.get("image")
    assert len(images) == 2  # the result and the one readable inline image
    assert not any("never-fetched" in url for image in images for url in image.value)
    assert any("not a readable image" in caption.value for caption in at.caption)
    assert not [request for request in sim.requests if "never-fetched" in request["path"]]


def test_the_json_view_shortens_inline_images_and_the_download_keeps_them(sim, history, media):
    uri = noisy_png_uri()
    pid, = history.add("make the sky purple", model=KONTEXT, input_image=uri, seed=3)
    at = history_page(sim, pid)
    (block,) = [code for code in at.code if code.language == "json"]
    size = len(base64.b64decode(uri.split(",", 1)[1])) // 1024
    assert json.loads(block.value) == {"input": {
        "prompt": "make the sky purple", "input_image": f"data:image/png;base64,…({size} KB inline image)", "seed": 3}}
    assert uri.split(",", 1)[1][:40] not in block.value
    downloaded = json.loads(download(at, media, "Download input JSON"))
    assert downloaded == {"input": {"prompt": "make the sky purple", "input_image": uri, "seed": 3}}


def test_results_are_shown_at_their_natural_size(sim, history, sent_elements):
    pid, = history.add("two lanterns", num_outputs=2, aspect_ratio="16:9")
    at = history_page(sim, pid)
    shown = [element for element in sent_elements if element.WhichOneof("type") == "imgs"]
    assert len(shown) == len(at.get("image")) == 2
    # "content": as wide as the image, or the column if that is narrower; never stretched wider.
    assert [element.width_config.WhichOneof("width_spec") for element in shown] == ["use_content"] * 2


def test_times_show_in_the_viewers_time_zone_and_creator_is_named(sim, client, history):
    prediction = client.create(DEV, {"prompt": "a kite"})
    history.store.record(prediction, creator="ana@example.com")
    history.settle([prediction.id])
    record = history.store.get(prediction.id)
    at = history_page(sim, prediction.id)
    facts = listed(at, "Run")
    assert facts["Created"] == record.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")  # no browser zone here: UTC
    assert facts["Creator"] == "ana@example.com"
    assert view.when(record.created_at, "Asia/Kolkata").endswith("IST")


def test_the_detail_view_says_when_retention_removed_the_full_image(sim, app_env):
    settings = Settings.from_sources({"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url})
    store = Store.for_settings(settings)
    kept, removed = saved(store, 40, (10, 10, 200)), saved(store, 41)
    with store._engine.begin() as conn:
        conn.execute(sa.text("UPDATE predictions SET tracking = 'done', created_at = created_at - 40 * 86400, "
                             "completed_at = NULL WHERE id = :id"), {"id": removed})
        conn.execute(sa.text("UPDATE predictions SET tracking = 'done' WHERE id = :id"), {"id": kept})
    store.prune_media(before=time.time() - 30 * 86400)
    store.close()

    def captions(prediction_id):
        at = open_app("pages/history.py", {"id": prediction_id}, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
        assert not at.exception
        return " ".join(str(c.value) for c in at.caption)

    assert "full image was removed" in captions(removed)
    assert "full image was removed" not in captions(kept)
