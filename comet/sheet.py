"""A batch's contact sheet as one image: its results in a labelled grid (rows = prompts or the
second swept value, columns = models, seeds or the first swept value), for the download beside
the Batch page's live grid. Pure Pillow: no Streamlit, so it is tested on its own."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from . import images

TILE = 192  # each result's square, its image letterboxed inside
GAP = 8
MARGIN = 16
ROW_LABEL_WIDTH = 220
HEADER_HEIGHT = 48  # the column labels' band
TITLE_HEIGHT = 36
FONT_SIZE = 13
LABEL_LINES = 3  # a long label is cut after this many lines, ending in "…"
LABEL_CHARS = 200  # what is drawn of a label at most (the planner keeps them short already)
BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (240, 242, 246)
INK = (49, 51, 63)
MUTED = (110, 112, 125)
MAX_CELLS = 5000  # a bigger grid would be an image no one can open


@dataclass(frozen=True)
class Tile:
    """One cell: its image bytes (a thumbnail), or the words that stand in for it (its state)."""

    image: bytes | None = None
    text: str = ""


@dataclass(frozen=True)
class Layout:
    rows: int
    columns: int
    title: bool = False
    tile: int = TILE

    @property
    def top(self) -> int:
        return MARGIN + (TITLE_HEIGHT if self.title else 0) + HEADER_HEIGHT

    @property
    def left(self) -> int:
        return MARGIN + ROW_LABEL_WIDTH

    @property
    def size(self) -> tuple[int, int]:
        width = self.left + self.columns * (self.tile + GAP) - GAP + MARGIN
        height = self.top + self.rows * (self.tile + GAP) - GAP + MARGIN
        return max(width, self.left + MARGIN), max(height, self.top + MARGIN)

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a cell's tile."""
        x = self.left + col * (self.tile + GAP)
        y = self.top + row * (self.tile + GAP)
        return x, y, x + self.tile, y + self.tile


def compose(row_labels: Sequence[str], column_labels: Sequence[str], tiles: Mapping[tuple[int, int], Tile],
            *, title: str = "", tile: int = TILE) -> Image.Image:
    """The grid: `tiles` by (row, column); a cell without a tile is left blank."""
    if len(row_labels) * len(column_labels) > MAX_CELLS:
        raise ValueError(f"a contact sheet holds at most {MAX_CELLS} cells")
    layout = Layout(len(row_labels), len(column_labels), bool(title), tile)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(FONT_SIZE)
    if title:
        draw.text((MARGIN, MARGIN), _fit(draw, title, font, layout.size[0] - 2 * MARGIN, 1)[0],
                  fill=INK, font=_font(FONT_SIZE + 5))
    for col, label in enumerate(column_labels):
        left, _, right, _ = layout.box(0, col)
        lines = _fit(draw, label, font, right - left, 2)
        _lines(draw, lines, font, left, layout.top - GAP - _height(font) * len(lines), INK)
    for row, label in enumerate(row_labels):
        _, top, _, _ = layout.box(row, 0)
        _lines(draw, _fit(draw, label, font, ROW_LABEL_WIDTH - GAP, LABEL_LINES), font, MARGIN, top, INK)
    for (row, col), cell in tiles.items():
        if not (0 <= row < layout.rows and 0 <= col < layout.columns):
            continue
        box = layout.box(row, col)
        picture = _picture(cell.image, tile) if cell.image else None
        if picture is None:
            draw.rectangle(box, fill=TILE_BACKGROUND)
            lines = _fit(draw, cell.text or "No image", font, tile - 2 * GAP, 4)
            _lines(draw, lines, font, box[0] + GAP, box[1] + GAP, MUTED)
        else:
            sheet.paste(picture, box[:2])
    return sheet


def png(row_labels: Sequence[str], column_labels: Sequence[str], tiles: Mapping[tuple[int, int], Tile],
        *, title: str = "", tile: int = TILE) -> bytes:
    buffer = io.BytesIO()
    compose(row_labels, column_labels, tiles, title=title, tile=tile).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _picture(data: bytes, side: int) -> Image.Image | None:
    """The image letterboxed in a side × side tile; None when it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > images.MAX_PIXELS:
                return None  # never decoded (see images.for_display)
            fitted = ImageOps.contain(image.convert("RGB"), (side, side))
    except Exception:  # Pillow reports bad data with many exception types
        return None
    square = Image.new("RGB", (side, side), TILE_BACKGROUND)
    square.paste(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
    return square


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except Exception:
        return ImageFont.load_default()


def _height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return bottom - top + 4


def _lines(draw: ImageDraw.ImageDraw, lines: list[str], font, x: int, y: int, fill) -> None:
    for n, line in enumerate(lines):
        draw.text((x, y + n * _height(font)), line, fill=fill, font=font)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int) -> list[str]:
    """Words wrapped to `width`, at most `max_lines` lines, the last ending in "…" when cut."""
    pieces: list[str] = []
    for word in str(text)[:LABEL_CHARS].split():
        while len(word) > 1 and draw.textlength(word, font=font) > width:  # a word wider than a line
            n = len(word) - 1
            while n > 1 and draw.textlength(word[:n], font=font) > width:
                n -= 1
            pieces.append(word[:n])
            word = word[n:]
        pieces.append(word)
    lines: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            current = piece
        else:
            current = candidate
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and draw.textlength(last + "…", font=font) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "…"
    return lines
