"""The contact sheet as one image (comet/sheet.py): a grid of the batch's rows and columns, each
result in its place, labels beside and above, and the state where a cell has no image."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comet import sheet

RED, BLUE = (220, 30, 30), (30, 60, 220)


def png(color, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def centre(image: Image.Image, box) -> tuple[int, int, int]:
    return image.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2))


def inked(image: Image.Image, box) -> bool:
    """Some pixel in the box is darker than the background (text was drawn there)."""
    return image.crop(box).convert("L").getextrema()[0] < 200


def test_the_sheet_is_a_grid_of_the_rows_and_columns_with_each_result_in_its_place():
    tiles = {(0, 0): sheet.Tile(png(RED)), (1, 2): sheet.Tile(png(BLUE, (30, 90))), (1, 0): sheet.Tile(text="Failed")}
    image = sheet.compose(["a red fox", "a paper boat"], ["seed 1", "seed 2", "seed 3"], tiles)
    layout = sheet.Layout(rows=2, columns=3)
    assert image.size == layout.size
    assert centre(image, layout.box(0, 0)) == RED
    assert centre(image, layout.box(1, 2)) == BLUE  # letterboxed, its middle still the image
    assert centre(image, layout.box(0, 1)) == sheet.BACKGROUND  # a cell without a tile stays blank
    assert inked(image, layout.box(1, 0))  # the state stands in for the missing image


def test_labels_are_drawn_beside_the_rows_and_above_the_columns():
    layout = sheet.Layout(rows=2, columns=2)
    labelled = sheet.compose(["first row", ""], ["left", ""], {})
    row_label = (sheet.MARGIN, layout.box(0, 0)[1], layout.left - sheet.GAP, layout.box(0, 0)[3])
    empty_row_label = (sheet.MARGIN, layout.box(1, 0)[1], layout.left - sheet.GAP, layout.box(1, 0)[3])
    column_label = (layout.box(0, 0)[0], sheet.MARGIN, layout.box(0, 0)[2], layout.top - 1)
    empty_column_label = (layout.box(0, 1)[0], sheet.MARGIN, layout.box(0, 1)[2], layout.top - 1)
    assert inked(labelled, row_label) and inked(labelled, column_label)
    assert not inked(labelled, empty_row_label) and not inked(labelled, empty_column_label)


def test_a_title_makes_room_above_the_grid():
    plain, titled = sheet.Layout(2, 2), sheet.Layout(2, 2, title=True)
    assert titled.size[1] == plain.size[1] + sheet.TITLE_HEIGHT
    assert sheet.compose(["a", "b"], ["c", "d"], {}, title="Foxes").size == titled.size


def test_a_long_label_is_cut_to_its_lines_and_a_bad_image_shows_as_text():
    tiles = {(0, 0): sheet.Tile(b"not an image", text="Succeeded")}
    image = Image.open(io.BytesIO(sheet.png(["word " * 400], ["x" * 500], tiles)))
    assert image.format == "PNG" and image.size == sheet.Layout(1, 1).size
    assert centre(image, sheet.Layout(1, 1).box(0, 0)) == sheet.TILE_BACKGROUND


def test_a_sheet_too_big_to_open_is_refused():
    with pytest.raises(ValueError):
        sheet.compose(["r"] * 100, ["c"] * 51, {})
