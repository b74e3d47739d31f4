"""How stored outputs are shown: made displayable once, never shrunk below what the page draws;
and the small thumbnail history keeps of each."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comet.images import DISPLAY_MAX_WIDTH, THUMBNAIL_SIDE, for_display, make_thumbnail


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 120, 40, 128)[: len(mode)]).save(buffer, format=fmt)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_an_image_the_browser_shows_as_it_is_is_not_touched(fmt):
    data = encoded((1024, 768), fmt)
    assert for_display(data) is data


def test_webp_the_flux_default_becomes_a_jpeg_of_the_same_size():
    shown = opened(for_display(encoded((1024, 576), "WEBP")))
    assert (shown.format, shown.size) == ("JPEG", (1024, 576))


def test_transparency_is_kept_as_png():
    shown = opened(for_display(encoded((512, 512), "WEBP", mode="RGBA")))
    assert (shown.format, shown.mode) == ("PNG", "RGBA")


def test_an_image_wider_than_the_page_draws_is_scaled_once_keeping_its_shape():
    shown = opened(for_display(encoded((2752, 1536), "PNG")))  # flux-1.1-pro-ultra at 16:9
    assert shown.width == DISPLAY_MAX_WIDTH
    assert abs(shown.width / shown.height - 2752 / 1536) < 0.01


def test_data_that_is_not_an_image_is_passed_through_for_streamlit_to_report():
    assert for_display(b"not an image") == b"not an image"


def test_an_upload_declaring_a_huge_canvas_is_refused_before_it_is_decoded():
    from comet.images import ImageProblem, read_image
    from support.hostile import png_bomb

    assert read_image("photo.png", encoded((3000, 2000), "PNG")).width == 3000  # 6 MP: fine
    with pytest.raises(ImageProblem, match="13000x13000 pixels"):
        read_image("bomb.png", png_bomb())  # 169 MP in a file of a few hundred KB


def test_a_stored_image_declaring_a_huge_canvas_is_never_decoded_for_display():
    from support.hostile import png_bomb

    bomb = png_bomb()
    assert for_display(bomb) is bomb  # handed back untouched, not decoded (169 MP)
    assert for_display(encoded((2000, 1000), "WEBP")) != encoded((2000, 1000), "WEBP")  # a normal one is


@pytest.mark.parametrize("fmt, mode", [("WEBP", "RGB"), ("PNG", "RGBA"), ("GIF", "RGB")])  # GIF: a palette
def test_a_thumbnail_is_a_small_jpeg_of_the_same_shape(fmt, mode):
    thumb = opened(make_thumbnail(encoded((1024, 576), fmt, mode)))
    assert thumb.format == "JPEG" and thumb.size == (THUMBNAIL_SIDE, 72)


def test_no_thumbnail_for_what_is_not_an_image_or_declares_a_huge_canvas():
    from support.hostile import png_bomb

    assert make_thumbnail(b"not an image") is None
    assert make_thumbnail(png_bomb()) is None  # 169 MP: never decoded
    assert make_thumbnail(encoded((6000, 6000), "PNG")) is not None  # 36 MP, the largest allowed
