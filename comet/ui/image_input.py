"""Input images for the models that take them: uploads and pasted https URLs, with thumbnails
of exactly what will be sent, in the model's own field and count; and the stored image being
edited ("Edit this image": `?edit=<prediction id>&output=<idx>`), sent first and recorded as the
new prediction's parent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from comet.catalog import DATA_URI_ADVICE, DATA_URI_MAX_BYTES, Model
from comet.images import UPLOAD_TYPES, ImageProblem, InputImage, check_url, downscale, human_size, read_image
from comet.media import MediaUnavailable
from comet.prediction import is_valid_id
from comet.store import HistoryError, Store
from comet.ui.safe import plain

SHRINK_KEY = "images.shrink"
EDIT_KEY = "images.edit"  # the EditSource being edited in this session
EDIT_LINK_KEY = "images.edit_link"  # the ?edit= link applied in this session, and its problem if any
EDIT_PARAM, OUTPUT_PARAM = "edit", "output"
HISTORY_PAGE = "pages/history.py"


@dataclass(frozen=True)
class EditSource:
    """A stored output opened with "Edit this image"."""

    prediction_id: str
    output: int  # the output's idx
    data: bytes

    @property
    def label(self) -> str:
        """"abcd1234… image 1": the id's start and the output counted from 1, as people count."""
        short = self.prediction_id if len(self.prediction_id) <= 9 else self.prediction_id[:8] + "…"
        return f"{short} image {self.output + 1}"

    @property
    def parent(self) -> tuple[str, int]:
        return self.prediction_id, self.output


@dataclass
class ImageChoice:
    values: list[str] = field(default_factory=list)  # URLs or data URIs, in order
    problems: list[str] = field(default_factory=list)  # shown beside the form; block sending
    edit: EditSource | None = None  # the image being edited, when it is among what is sent
    edit_uri: str | None = None  # the data URI it is sent as


def edit_source() -> EditSource | None:
    return st.session_state.get(EDIT_KEY)


def stop_edit() -> None:
    """Callback of "Stop editing": the form goes back to a plain Create (the link with it)."""
    st.session_state.pop(EDIT_KEY, None)
    st.session_state.pop(EDIT_LINK_KEY, None)
    for name in (EDIT_PARAM, OUTPUT_PARAM):
        st.query_params.pop(name, None)


def edit_from_link(store: Store) -> bool:
    """Apply `?edit=<id>&output=<idx>` once per link and session (it stays in the address, so a
    reload opens the same edit): the stored image becomes the image being edited. True when an
    edit was just started (the caller then picks a model that takes it). A link to an image this
    history does not hold (an unknown id, a removed image) says so each run while it is in the
    address, and the page is a normal Create page."""
    wanted = st.query_params.get(EDIT_PARAM)
    if wanted is None:
        return False
    link = (wanted, st.query_params.get(OUTPUT_PARAM, "0"))
    applied = st.session_state.get(EDIT_LINK_KEY)
    started = False
    if applied is None or applied[0] != link:
        problem, source = _open(store, *link)
        if source is not None:
            st.session_state[EDIT_KEY] = source
            started = True
        if problem is None or source is not None or not problem.startswith(_LATER):
            st.session_state[EDIT_LINK_KEY] = (link, problem)  # a passing outage is tried again
        applied = (link, problem)
    if problem := applied[1]:
        st.warning(problem, icon=":material/image_not_supported:")
    return started


_LATER = "The image to edit cannot be loaded right now"


def _open(store: Store, wanted: str, output: str) -> tuple[str | None, EditSource | None]:
    if not is_valid_id(wanted) or not output.isdigit() or len(output) > 4:
        return (f"This link asks to edit “{plain(wanted, limit=80)}” image “{plain(output, limit=8)}”, which is "
                "not a stored image: open one in History and press **Edit this image**."), None
    idx = int(output)
    try:
        stored = store.output_bytes(wanted, idx)
    except (MediaUnavailable, HistoryError):
        return f"{_LATER}: the history or its image store is unavailable. Reload the page in a moment.", None
    if stored is None:
        return (f"Image {idx + 1} of prediction `{wanted}` is not in this dashboard's history (or only its "
                "thumbnail is kept), so there is nothing to edit: this is a normal Create page."), None
    return None, EditSource(wanted, idx, stored[1])


def parent_of(choice: ImageChoice, model_input: dict[str, Any]) -> tuple[str, int] | None:
    """The image a request edits, when the image being edited is in it (in the form's image field,
    or anywhere in a request edited as JSON): that is the new prediction's parent."""
    if choice.edit is None or not choice.edit_uri:
        return None
    for value in model_input.values():
        if value == choice.edit_uri or (isinstance(value, list) and choice.edit_uri in value):
            return choice.edit.parent
    return None


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
    return (edit_source() is not None or bool(st.session_state.get(_upload_key(model)))
            or bool((st.session_state.get(_urls_key(model)) or "").strip()))


def image_inputs(model: Model, disabled: bool = False) -> ImageChoice:
    """Draw the image section for `model` (nothing for text-only models) and return what it holds.
    `disabled` (the raw JSON is in charge): drawn greyed out, nothing from it is sent."""
    choice = ImageChoice()
    edit = edit_source()
    if not model.takes_images:
        if edit is not None:
            _edit_note(edit, f"{model.title} takes no image, so it is not sent: pick a model that edits "
                             "images, such as FLUX Kontext Pro.")
        return choice
    several = model.max_images > 1
    limit = f"up to {model.max_images}" if several else "one"
    with st.expander(f"Input images ({limit})", expanded=True, icon=":material/image:"):
        edit_box = st.container()  # on top, filled once the downscale choice below is read
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
        edited = _edit_image(edit, shrink, choice, edit_box) if edit is not None else None
        if disabled:
            choice.values.clear()  # the JSON is sent as it is (with the edited image if it holds it)
            st.caption("Not sent while the request is edited as JSON: put images in the JSON.")
            return choice
        files = uploads if isinstance(uploads, list) else ([uploads] if uploads else [])
        images = ([edited] if edited else []) + _read_uploads(files, shrink, choice)
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


def _edit_image(edit: EditSource, shrink: bool, choice: ImageChoice, box) -> InputImage | None:
    """The image being edited, prepared as an upload is (checked, downscaled on the same advice),
    sent first; its note with "Stop editing" in `box`."""
    with box:
        _edit_note(edit, "Sent as the input image; the new prediction is recorded as its edit.")
        prepared = _prepared(edit.label, edit.data, shrink)
        if isinstance(prepared, str):
            choice.problems.append(prepared)
            return None
        _advise(prepared)
    choice.edit, choice.edit_uri = edit, prepared.data_uri()
    choice.values.insert(0, choice.edit_uri)
    return prepared


def _edit_note(edit: EditSource, detail: str) -> None:
    row = st.container(horizontal=True, vertical_alignment="center")
    row.markdown(f":material/edit: Editing **{plain(edit.label)}**")
    row.page_link(HISTORY_PAGE, label="Open", icon=":material/open_in_new:",
                  query_params={"id": edit.prediction_id}, help="Its detail in History")
    row.button("Stop editing", key="images.stop_edit", icon=":material/close:", on_click=stop_edit)
    st.caption(detail)


def _advise(prepared: InputImage) -> None:
    if prepared.size > DATA_URI_MAX_BYTES:
        st.warning(
            f"{plain(prepared.name)} is {human_size(prepared.size)}: {DATA_URI_ADVICE}. "
            "Turn on downscaling, or paste an https:// URL instead.",
            icon=":material/warning:",
        )


def _read_uploads(files, shrink: bool, choice: ImageChoice) -> list[InputImage]:
    images = []
    for upload in files:
        prepared = _prepared(upload.name, upload.getvalue(), shrink)
        if isinstance(prepared, str):
            choice.problems.append(prepared)
            continue
        _advise(prepared)
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
