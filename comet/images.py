"""Image code: input images for the models that take them (checked to really be images, sent as
data URIs), renditions Streamlit can show as they are, and the thumbnails history keeps.

Replicate advises data URIs only up to 256 KB, so larger uploads are flagged and can be
downscaled (re-encoded as JPEG or WEBP, halving the pixel count until they fit)."""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from .catalog import DATA_URI_MAX_BYTES as ADVISED_MAX_BYTES  # one source: the catalog says why

UPLOAD_MAX_BYTES = 20 * 1024 * 1024
# A small file can declare a huge canvas (a 13000x13000 PNG is under 1 MB on the wire and
# about 500 MB decoded): anything declaring more pixels is refused before it is decoded.
# FLUX works with a few megapixels; 36 MP is a 6000x6000 photo.
MAX_PIXELS = 36_000_000
# Pillow's format name -> the MIME type the API accepts.
ACCEPTED = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
UPLOAD_TYPES = ("jpg", "jpeg", "png", "gif", "webp")
THUMBNAIL_SIDE = 128
THUMBNAIL_TYPE = "image/jpeg"
_log = logging.getLogger(__name__)


class ImageProblem(ValueError):
    """A user-facing reason an image cannot be sent."""


@dataclass(frozen=True)
class InputImage:
    name: str
    mime: str
    data: bytes
    width: int
    height: int

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def too_big(self) -> bool:
        return self.size > ADVISED_MAX_BYTES

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def read_image(name: str, data: bytes) -> InputImage:
    """Check that `data` is a JPEG, PNG, GIF or WEBP image (by its content, not its name)."""
    if not data:
        raise ImageProblem(f"{name} is empty.")
    if len(data) > UPLOAD_MAX_BYTES:
        raise ImageProblem(f"{name} is {human_size(len(data))}; the limit is {human_size(UPLOAD_MAX_BYTES)}.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            width, height = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"{name} is not a readable image.") from exc
    if image_format not in ACCEPTED:
        raise ImageProblem(f"{name} is a {image_format} image; use JPEG, PNG, GIF or WEBP.")
    if width * height > MAX_PIXELS:
        raise ImageProblem(f"{name} is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels.")
    return InputImage(name=name, mime=ACCEPTED[image_format], data=data, width=width, height=height)


def downscale(image: InputImage, max_bytes: int = ADVISED_MAX_BYTES) -> InputImage:
    """Re-encode smaller until it fits `max_bytes` (WEBP keeps transparency, else JPEG)."""
    with Image.open(io.BytesIO(image.data)) as source:
        source.seek(0)  # first frame of a GIF
        has_alpha = source.mode in ("RGBA", "LA") or "transparency" in source.info
        frame = source.convert("RGBA" if has_alpha else "RGB")
    target_format, mime = ("WEBP", "image/webp") if has_alpha else ("JPEG", "image/jpeg")
    scale = 1.0
    for _ in range(12):
        width, height = max(int(frame.width * scale), 16), max(int(frame.height * scale), 16)
        buffer = io.BytesIO()
        frame.resize((width, height), Image.LANCZOS).save(buffer, target_format, quality=85)
        if buffer.tell() <= max_bytes:
            return InputImage(image.name, mime, buffer.getvalue(), width, height)
        scale *= 0.7  # about half the pixels each round
    raise ImageProblem(f"{image.name} could not be made smaller than {human_size(max_bytes)}.")


def check_url(url: str) -> str:
    """A pasted image URL: https only (the API fetches it; plain http and other schemes are refused)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ImageProblem(f"Image URLs must start with https:// (got {url[:60]!r}).")
    return url


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


# Streamlit draws images at most this wide (2 x its 730 px content width) and shrinks, on every
# run, any image wider than that; it also re-encodes on every run whatever is not JPEG, PNG or GIF
# (FLUX's default output is WEBP). A rendition made once avoids that per-run cost.
DISPLAY_MAX_WIDTH = 1460


def for_display(data: bytes) -> bytes:
    """Bytes Streamlit can show as they are: the stored image itself when it already is a JPEG,
    PNG or GIF no wider than DISPLAY_MAX_WIDTH, else a JPEG (PNG where it has transparency) of at
    most that width. Undecodable data is returned unchanged (st.image then reports it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                return data  # never decoded here (only stored by older releases)
            if image.format in ("JPEG", "PNG", "GIF") and image.width <= DISPLAY_MAX_WIDTH:
                return data
            if image.width > DISPLAY_MAX_WIDTH:
                image.thumbnail((DISPLAY_MAX_WIDTH, image.height * DISPLAY_MAX_WIDTH // image.width + 1))
            alpha = image.mode in ("RGBA", "LA", "P")
            converted = image.convert("RGBA" if alpha else "RGB")
    except Exception:  # Pillow reports bad data with many exception types
        return data
    buffer = io.BytesIO()
    if alpha:
        converted.save(buffer, format="PNG")
    else:
        converted.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_thumbnail(data: bytes) -> bytes | None:
    """A JPEG at most THUMBNAIL_SIDE px on its long side; None if Pillow cannot decode the image
    or it declares more than MAX_PIXELS (the original is kept all the same: a missing thumbnail
    must not lose an output)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                _log.warning("no thumbnail for an image of %dx%d pixels", image.width, image.height)
                return None
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            small = image.convert("RGB")  # JPEG has no alpha or palette
    except Exception:  # Pillow reports bad data with many exception types
        _log.warning("could not make a thumbnail", exc_info=True)
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
