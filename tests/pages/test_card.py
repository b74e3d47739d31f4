"""The prediction card and the "Earlier in this session" grid, as their users meet them: a
failure said once, downloads named after the prompt (and safe to save on any OS), one ZIP for
several images, a share link that fits on one line, and a tidy grid of earlier results.

Predictions are made for real: create calls to the stand-in over a socket, recorded in the
app's own history file and followed to the end by a Tracker; the pages run in AppTest."""

from __future__ import annotations

import io
import math
import re
import zipfile

import pytest
import sqlalchemy as sa
from PIL import Image

from comet import export
from comet.config import Settings
from comet.prediction import TERMINAL
from comet.store import Store, outputs
from comet.tracker import Tracker
from comet.ui import card
from support.api import KEY
from support.apptest import open_app
from support.hostile import png_bomb
from support.waiting import wait_until

SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"
HISTORY = "pages/history.py"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}
SAMPLE_ID = "q4chw5rey9rmt0cww76t4h3ma4"


@pytest.fixture
def make(sim, client, app_env):
    """make(prompt, **input) -> the id of a finished prediction in the app's own history."""
    store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url}))

    def made(prompt: str, model: str = SCHNELL, **extra) -> str:
        prediction = client.create(model, {"prompt": prompt, **extra})
        store.record(prediction)
        wait_until(lambda: sim.get_prediction(prediction.id)["status"] in TERMINAL)
        with Tracker(client, store, allow_private_downloads=True, **FAST):
            wait_until(lambda: store.unfinished_count() == 0)
        return prediction.id

    made.store = store
    yield made
    store.close()


def detail(sim, prediction_id: str):
    at = open_app(page=HISTORY, query={"id": prediction_id}, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert not at.exception, at.exception
    return at


def served(media, url: str):
    """The file behind a media URL, as the browser would get it (bytes and download name)."""
    return media[-1][1].get_file(url.rsplit("/", 1)[-1])


def clicked_download(media, button):
    """What a click on a made-on-click download button hands the browser."""
    manager, _ = media[-1]
    return served(media, manager.execute_deferred(button.proto.deferred_file_id))


def downloads(at, label: str):
    return [b for b in at.get("download_button") if b.label == label]


# ---- the failure line -------------------------------------------------------------------------


@pytest.mark.parametrize("marker, line", [
    ("[sim:fail]", "**Failed:** simulated model error"),
    ("[sim:abort]", "**Aborted:** simulated platform interruption"),
])
def test_a_failure_says_its_status_once(sim, make, marker, line):
    at = detail(sim, make(f"{marker} a cracked mirror"))
    assert [error.value for error in at.error] == [line]  # not "Failed: Prediction failed: …"


@pytest.mark.parametrize("error, line", [
    ("CUDA out of memory", "**Failed:** CUDA out of memory"),
    ("failed to load the weights", "**Failed:** failed to load the weights"),  # no ":": the error's own words
    ("Prediction failed", "**Failed**"),
    ("Prediction failed: see [logs](https://evil.example)",  # escaped, and no autolink
     "**Failed:** see \\[logs\\]\\(https\u2060\\://evil\\.example\\)"),
])
def test_an_error_keeps_its_own_words_and_stays_inert(error, line):
    assert card.failure_line("failed", error) == line


# ---- file names -------------------------------------------------------------------------------


def test_downloads_are_named_after_the_prompt(sim, make, media):
    pid = make("A red fox in snow!", num_outputs=2)
    at = detail(sim, pid)
    names = [served(media, b.proto.url).filename for b in downloads(at, "Download")]
    assert names == [f"a-red-fox-in-snow-{pid[:8]}-0.webp", f"a-red-fox-in-snow-{pid[:8]}-1.webp"]


SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.webp")


@pytest.mark.parametrize("prompt, expected", [
    ("Crème brûlée, à la carte", f"creme-brulee-a-la-carte-{SAMPLE_ID[:8]}-0.webp"),
    ("../../etc/passwd", f"etc-passwd-{SAMPLE_ID[:8]}-0.webp"),
    ("C:\\Windows\\system32 <a>|b?*", f"c-windows-system32-a-b-{SAMPLE_ID[:8]}-0.webp"),
    ("🦊🔥✨", f"{SAMPLE_ID}-0.webp"),  # nothing usable: the id alone
    ("", f"{SAMPLE_ID}-0.webp"),
    ("   \n\t ", f"{SAMPLE_ID}-0.webp"),
])
def test_a_file_name_keeps_what_is_safe_of_the_prompt(prompt, expected):
    name = export.output_file_name(prompt, SAMPLE_ID, 0, "image/webp")
    assert name == expected
    assert SAFE_NAME.fullmatch(name)


def test_a_ten_kilobyte_prompt_makes_a_short_name_cut_between_words():
    prompt = "a lighthouse keeper watching storms " * 300  # about 10 KB
    name = export.output_file_name(prompt, SAMPLE_ID, 3, "image/webp")
    assert name == f"a-lighthouse-keeper-watching-storms-a-{SAMPLE_ID[:8]}-3.webp"
    one_word = export.output_file_name("x" * 10_000, SAMPLE_ID, 0, "image/webp")
    assert one_word == f"{'x' * export.SLUG_CHARS}-{SAMPLE_ID[:8]}-0.webp"


def test_a_stored_id_that_is_not_an_id_never_becomes_a_path():
    name = export.output_file_name("a fox", "../../etc/x", 0, "image/webp")
    assert "/" not in name and ".." not in name and SAFE_NAME.fullmatch(name)


# ---- download all -----------------------------------------------------------------------------


def test_several_images_can_be_downloaded_at_once_as_a_zip(sim, make, media):
    pid = make("three paper boats", num_outputs=3)
    at = detail(sim, pid)
    singles = downloads(at, "Download")
    (everything,) = downloads(at, "Download all")
    got = clicked_download(media, everything)
    assert got.filename == f"three-paper-boats-{pid[:8]}.zip"
    archive = zipfile.ZipFile(io.BytesIO(got.content))
    files = [served(media, b.proto.url) for b in singles]
    assert sorted(archive.namelist()) == sorted(f.filename for f in files) and len(files) == 3
    for single in files:  # the same images, under the same names as one by one
        assert archive.read(single.filename) == single.content


def test_one_image_has_no_download_all(sim, make):
    at = detail(sim, make("one paper boat"))
    assert len(downloads(at, "Download")) == 1
    assert downloads(at, "Download all") == []


# ---- the share link ---------------------------------------------------------------------------


def test_the_share_link_shows_a_short_id_and_carries_the_whole_one(sim, make):
    pid = make("a harbour at night")
    at = detail(sim, pid)
    (link,) = [link for link in at.get("page_link") if link.proto.query_string.startswith("id=")]
    assert link.value == f"`{pid[:8]}…`"  # nine characters, one code span: no room to wrap
    assert link.proto.query_string == f"id={pid}"
    assert pid in link.proto.help


def test_an_id_short_enough_is_shown_whole_and_a_bad_one_inert():
    assert card.id_label("abc123") == "`abc123`"
    assert card.id_label("<b>x") == "<b>x".replace("<", "\\<").replace(">", "\\>")


# ---- the "Earlier in this session" grid --------------------------------------------------------


def test_earlier_results_are_a_grid_of_equal_tiles_with_word_trimmed_captions(sim, make, media):
    long_prompt = "an enormous lighthouse standing alone on a windswept northern cliff at dusk"
    earlier = [
        make("a wide panorama", aspect_ratio="21:9"),
        make("a tall tower", aspect_ratio="9:16"),
        make(long_prompt),
        make("[sim:fail] a broken vase"),  # no image: a tile all the same
    ]
    latest = make("[sim:fail] the newest, shown as a card")
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    at.session_state["create.groups"] = [[latest]] + [[pid] for pid in earlier]
    at.run()
    assert not at.exception, at.exception

    tiles = []
    for element in at.get("image"):  # the newest failed: every image on the page is a tile
        with Image.open(io.BytesIO(served(media, element.value[0]).content)) as image:
            tiles.append(image.size)
    assert len(tiles) == len(earlier)
    assert len(set(tiles)) == 1 and tiles[0][0] == tiles[0][1]  # one square size for all

    # Under each tile a one-word link (a page link never wraps: a prompt there was clipped
    # mid-letter), then the prompt's first words, cut between words.
    links = {link.proto.query_string.removeprefix("id="): link for link in at.get("page_link")}
    assert [links[pid].value for pid in earlier] == ["Open", "Open", "Open", "Failed"]
    assert links[earlier[3]].proto.icon == card.STATUS_STYLE["failed"][1]
    captions = [caption.value for caption in at.caption]
    (cut,) = [caption for caption in captions if caption.startswith("an enormous")]
    assert cut.endswith("…") and len(cut) <= card.GALLERY_CAPTION_CHARS + 1
    assert long_prompt.startswith(cut[:-1]) and long_prompt[len(cut) - 1] == " "  # a whole word kept
    assert "a wide panorama" in captions


@pytest.mark.parametrize("stored", [b"not an image at all", png_bomb()], ids=["garbage", "13000px-canvas"])
def test_a_stored_file_that_cannot_be_a_tile_gets_a_plain_one(sim, client, make, media, stored):
    # What an older release or a hostile upstream may have left: kept, never decoded for a tile
    # (the canvas would take 169 MB), and the grid keeps its shape.
    good, latest = make("a fine fox"), make("[sim:fail] the newest")
    odd = client.create(SCHNELL, {"prompt": "a strange file"})
    make.store.record(odd)
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(
        Settings.from_sources({}).data_dir / "history.sqlite")))
    with engine.begin() as conn:  # straight in: the store itself would try to make a thumbnail
        conn.execute(sa.insert(outputs).values(prediction_id=odd.id, idx=0, content_type="image/png",
                                               size=len(stored), data=stored, source_url="test"))
    engine.dispose()
    assert len(make.store.get(odd.id).outputs) == 1  # it is there to be drawn
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    at.session_state["create.groups"] = [[latest], [odd.id], [good]]
    at.run()
    assert not at.exception, at.exception
    tiles = []
    for element in at.get("image"):
        with Image.open(io.BytesIO(served(media, element.value[0]).content)) as image:
            tiles.append((image.size, image.convert("RGB").getcolors(1)))
    (plain_size, plain_colours), (fox_size, fox_colours) = tiles
    assert plain_size == fox_size  # one size for both...
    ((count, colour),) = plain_colours  # ...one of them blank (the background, give or take encoding)
    assert count == card.TILE_SIDE ** 2 and max(map(abs, map(int.__sub__, colour, card.TILE_BACKGROUND))) <= 2
    assert fox_colours is None  # the image: many colours


@pytest.mark.parametrize("text, shown", [
    ("a fox", "a fox"),
    ("a  fox\n\nin   snow", "a fox in snow"),  # one line
    ("one two three four five six", "one two three…"),
    ("x" * 30, "x" * 15 + "…"),  # one long word: cut, as it has to be
    ("cafe\u0301 cafe\u0301 cafe\u0301 cafe\u0301", "cafe\u0301 cafe\u0301…"),
    ("x" * 14 + "e\u0301" + "x" * 9, "x" * 14 + "…"),  # never an "e" without its accent
    ("x" * 13 + "\U0001f469\u200d\U0001f467" + "x" * 9, "x" * 13 + "…"),  # nor half an emoji
])
def test_captions_are_cut_between_words(text, shown):
    assert card.trimmed(text, 15) == shown
