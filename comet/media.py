"""Where output images live: files in a folder (content-addressed, written atomically) so the
history database keeps metadata and thumbnails only, or inside the database (`db:`, as before).

Chosen by `COMET_MEDIA_URL`: `file:` (a `media/` folder in COMET_DATA_DIR), `file:/some/path`, or
`db:`. Without it: files beside an SQLite history (one disk either way), the database when the
history is in a server database (COMET_DATABASE_URL: on Community Cloud the local disk is wiped
at every reboot, so files there would be lost). S3-compatible object storage is not built yet.

A key is the SHA-256 of the bytes plus an extension: writing the same image twice is one file,
and a key read back from the database is checked before it becomes a path."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_KEY_RE = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,8}")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True)
class StoredFile:
    """One output file to keep: its real content type (from the bytes), the bytes, and where it
    came from (see source_label). Made by the downloader (comet.fetch), kept by the store."""

    content_type: str
    data: bytes = field(repr=False)
    source_url: str


def source_label(url: str) -> str:
    """What to keep of an output's address: a data: URI's payload is the image itself, already
    stored as bytes, so only its header is kept."""
    if url[:5].lower() == "data:":
        return url.partition(",")[0] + ",..."
    return url


class MediaError(ValueError):
    """A media setting that cannot be used, or a stored key that is not one of ours."""


class FileMedia:
    """Images as files under `root`, at `<2 hex>/<sha256>.<ext>`."""

    kind = "files"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileMedia({str(self.root)!r})"

    def put(self, data: bytes, content_type: str) -> str:
        """Store `data`; returns its key. Atomic (a temporary file renamed into place) and
        idempotent (the same bytes are one file), so an interrupted write never leaves a half file."""
        key = f"{hashlib.sha256(data).hexdigest()}.{_EXTENSIONS.get(content_type, 'bin')}"
        path = self._path(key)
        if path.exists() and path.stat().st_size == len(data):
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes | None:
        """The bytes, or None when the file is gone (deleted, or a disk that did not survive)."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise MediaError(f"not a media key: {key[:80]!r}" if isinstance(key, str) else "not a media key")
        return self.root / key[:2] / key


def from_setting(value: str | None, *, data_dir: Path, database_url: str | None) -> FileMedia | None:
    """The media store for COMET_MEDIA_URL; None means "in the database"."""
    value = (value or "").strip()
    if not value:
        return None if database_url else FileMedia(data_dir / "media")
    if value == "db:":
        return None
    if value == "file:" or value.startswith("file:"):
        path = value.removeprefix("file:").removeprefix("//")
        root = Path(path).expanduser() if path else data_dir / "media"
        if not root.is_absolute():
            raise MediaError(f"COMET_MEDIA_URL must name an absolute folder, e.g. file:/srv/comet-media (got {value!r}).")
        return FileMedia(root)
    if value.startswith("s3://"):
        raise MediaError("COMET_MEDIA_URL: S3-compatible storage is not available in this release; "
                         "use file: or db:.")
    raise MediaError(f"COMET_MEDIA_URL must be file:, file:/a/folder or db: (got {value!r}).")
