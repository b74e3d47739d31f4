"""Input images for the models that take them: uploads and pasted https URLs, with thumbnails
of exactly what will be sent, in the model's own field and count."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from comet.catalog import DATA_URI_ADVICE, DATA_URI_MAX_BYTES, Model
from comet.images import UPLOAD_TYPES, ImageProblem, InputImage, check_url, downscale, human_size, read_image
from comet.ui.safe import plain

SHRINK_KEY = "images.shrink"


@dataclass
class ImageChoice:
    values: list[str] = field(default_factory=list)  # URLs or data URIs, in order
    problems: list[str] = field(default_factory=list)  # shown beside the form; block sending


@st.cache_data(max_entries=64, show_spinner=False)
def _prepared(name: str, data: bytes, shrink: bool) -> InputImage | str:
    """Checked (and maybe downscaled) once per upload, not on every rerun; a str is a problem."""
    try:
        image = read_image(name, data)
        return downscale(image, DATA_URI_MAX_BYTES) if shrink and image.size > DATA_URI_MAX_BYTES else image
    except ImageProblem as exc:
        return str(exc)


def _upload_key(model: Model) -> str:
    return f"images.upload.{model.image_field}"


def _urls_key(model: Model) -> str:
    return f"images.urls.{model.image_field}"


def has_images(model: Model) -> bool:
    """Whether an image is given (an upload or a URL), read before the form is drawn: the form's
    defaults follow it (an edit's aspect ratio matches its input image)."""
    if not model.takes_images:
        return False
    return bool(st.session_state.get(_upload_key(model))) or bool((st.session_state.get(_urls_key(model)) or "").strip())


def image_inputs(model: Model, disabled: bool = False) -> ImageChoice:
    """Draw the image section for `model` (nothing for text-only models) and return what it holds.
    `disabled` (the raw JSON is in charge): drawn greyed out, nothing from it is sent."""
    choice = ImageChoice()
    if not model.takes_images:
        return choice
    several = model.max_images > 1
    limit = f"up to {model.max_images}" if several else "one"
    with st.expander(f"Input images ({limit})", expanded=True, icon=":material/image:"):
        uploads = st.file_uploader(
            "Upload", type=list(UPLOAD_TYPES), accept_multiple_files=several, key=_upload_key(model),
            help=f"JPEG, PNG, GIF or WEBP, sent inline as data URIs: {DATA_URI_ADVICE}.",
            disabled=disabled,
        )
        urls_text = st.text_area(
            "…or paste https URLs" if several else "…or paste an https URL",
            key=_urls_key(model), height=68 if several else 40, disabled=disabled,
            placeholder="https://example.com/photo.jpg" + ("  (one per line)" if several else ""),
        )
        shrink = st.toggle(f"Downscale images above {human_size(DATA_URI_MAX_BYTES)} before sending", value=True,
                           key=SHRINK_KEY, disabled=disabled)
        if disabled:
            st.caption("Not sent while the request is edited as JSON: put images in the JSON.")
            return choice
        files = uploads if isinstance(uploads, list) else ([uploads] if uploads else [])
        images = _read_uploads(files, shrink, choice)
        for line in (urls_text or "").splitlines():
            if line.strip():
                try:
                    choice.values.append(check_url(line))
                except ImageProblem as exc:
                    choice.problems.append(str(exc))
        _thumbnails(images, [v for v in choice.values if not v.startswith("data:")])
    if len(choice.values) > model.max_images:
        choice.problems.append(f"{model.title} takes {limit} input image{'s' if several else ''}; "
                               f"{len(choice.values)} are selected.")
    return choice


def _read_uploads(files, shrink: bool, choice: ImageChoice) -> list[InputImage]:
    images = []
    for upload in files:
        prepared = _prepared(upload.name, upload.getvalue(), shrink)
        if isinstance(prepared, str):
            choice.problems.append(prepared)
            continue
        if prepared.size > DATA_URI_MAX_BYTES:
            st.warning(
                f"{plain(prepared.name)} is {human_size(prepared.size)}: {DATA_URI_ADVICE}. "
                "Turn on downscaling, or paste an https:// URL instead.",
                icon=":material/warning:",
            )
        images.append(prepared)
        choice.values.append(prepared.data_uri())
    return images


def _thumbnails(images: list[InputImage], urls: list[str]) -> None:
    if not images and not urls:
        return
    st.caption("Will be sent:")
    columns = st.columns(4)
    for n, image in enumerate(images):
        with columns[n % 4]:
            st.image(image.data, caption=f"{image.width}×{image.height} · {human_size(image.size)}", width="stretch")
    for n, url in enumerate(urls, start=len(images)):
        with columns[n % 4]:
            st.caption(plain(url, limit=80))
