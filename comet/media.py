"""Where output images live: files in a folder (content-addressed, written atomically) so the
history database keeps metadata and thumbnails only, or inside the database (`db:`, as before).

Chosen by `COMET_MEDIA_URL`: `file:` (a `media/` folder in COMET_DATA_DIR), `file:/some/path`,
`s3://bucket/prefix` (any S3-compatible service: the objects themselves are handled by
comet.objectstore, which speaks HTTP; this module only reads the setting), or `db:`. Without it:
files beside an SQLite history (one disk either way), the database when the history is in a
server database (COMET_DATABASE_URL: on Community Cloud the local disk is wiped at every reboot,
so files there would be lost).

A key is the SHA-256 of the bytes plus an extension: writing the same image twice is one file,
and a key read back from the database is checked before it becomes a path."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

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


class MediaUnavailable(Exception):
    """The media store could not be used just now (a disk error, a bucket that refused or did not
    answer). The message is for people: it names the cause, never a credential."""


def media_key(data: bytes, content_type: str) -> str:
    """The key of `data`: its SHA-256 and an extension (the same image is always one object)."""
    return f"{hashlib.sha256(data).hexdigest()}.{_EXTENSIONS.get(content_type, 'bin')}"


def check_key(key: object) -> str:
    """`key` if it is one of ours (read back from the database, it becomes a path or an object
    name); MediaError otherwise."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise MediaError(f"not a media key: {key[:80]!r}" if isinstance(key, str) else "not a media key")
    return key


class MediaStore(Protocol):
    """What the history store needs of a media store (FileMedia, comet.objectstore.S3Media). Each
    call raises MediaUnavailable when the store cannot be used just now."""

    kind: str

    def put(self, data: bytes, content_type: str) -> str: ...
    def get(self, key: str) -> bytes | None: ...
    def delete(self, key: str) -> None: ...
    def check(self) -> None: ...


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
        key = media_key(data, content_type)
        path = self._path(key)
        try:
            if path.exists() and path.stat().st_size == len(data):
                return key
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        except OSError as exc:
            raise MediaUnavailable(f"the media folder cannot be written ({exc.strerror or exc})") from exc
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException as exc:
            Path(temporary).unlink(missing_ok=True)
            if isinstance(exc, OSError):  # e.g. a full disk: the caller keeps the image elsewhere
                raise MediaUnavailable(f"the media folder cannot be written ({exc.strerror or exc})") from exc
            raise
        return key

    def get(self, key: str) -> bytes | None:
        """The bytes, or None when the file is gone (deleted, or a disk that did not survive)."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MediaUnavailable(f"the media folder cannot be read ({exc.strerror or exc})") from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check(self) -> None:
        """The folder exists (made if need be) and can be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MediaUnavailable(f"the media folder cannot be made ({exc.strerror or exc})") from exc
        if not os.access(self.root, os.W_OK):
            raise MediaUnavailable(f"the media folder {self.root} cannot be written")

    def _path(self, key: str) -> Path:
        key = check_key(key)
        return self.root / key[:2] / key


@dataclass(frozen=True)
class S3Location:
    """Where `s3://bucket/prefix` objects go, and the credentials that sign for them (from the
    standard AWS names, in secrets or the environment). Only configuration: no I/O here."""

    bucket: str
    prefix: str  # "" or ends with "/"
    endpoint: str  # scheme://host[:port] and perhaps a path (Supabase's /storage/v1/s3)
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = True  # https://endpoint/bucket/key; AWS's own endpoint uses bucket.host

    kind = "s3"

    def __str__(self) -> str:  # what a startup message or the sidebar may say: never a credential
        return f"s3://{self.bucket}/{self.prefix}"


# A bucket name any S3-compatible service accepts (AWS's rules); a prefix of plain path segments.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_RE = re.compile(r"([A-Za-z0-9!_.*'()-]+/)*")
_REGION_RE = re.compile(r"[a-z0-9-]{1,32}")
_ENDPOINT_PATH_RE = re.compile(r"(/[A-Za-z0-9_.~-]+)*")  # plain segments: no "..", no encoding
S3_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def parse_s3(value: str, read: Callable[[str], str]) -> S3Location:
    """`s3://bucket/prefix` and the AWS_* settings `read` returns ("" when unset) as a checked
    S3Location; MediaError with what to fix otherwise."""
    parts = urlsplit(value)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if parts.query or parts.fragment or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise MediaError(f"COMET_MEDIA_URL must be s3://bucket or s3://bucket/prefix with a valid bucket name "
                         f"(lowercase letters, digits, dots and hyphens; got {value[:100]!r}).")
    if not _PREFIX_RE.fullmatch(prefix) or "//" in prefix or any(s in (".", "..") for s in prefix.split("/")):
        raise MediaError(f"COMET_MEDIA_URL: the prefix after the bucket must be plain folder names, e.g. "
                         f"s3://{bucket}/comet/ (got {value[:100]!r}).")
    access_key_id, secret = read("AWS_ACCESS_KEY_ID"), read("AWS_SECRET_ACCESS_KEY")
    if not access_key_id or not secret:
        raise MediaError("COMET_MEDIA_URL is an s3:// bucket, so AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                         "must be set (in secrets or the environment).")
    region = read("AWS_REGION") or read("AWS_DEFAULT_REGION") or "us-east-1"
    if not _REGION_RE.fullmatch(region):
        raise MediaError(f"AWS_REGION must be a region name such as us-east-1 or auto (got {region[:40]!r}).")
    endpoint = read("AWS_ENDPOINT_URL_S3") or read("AWS_ENDPOINT_URL")
    if endpoint:
        point = urlsplit(endpoint)
        try:
            point.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            point = point._replace(netloc="")
        path = point.path.rstrip("/")
        if point.scheme not in ("https", "http") or not point.hostname or point.username or point.password \
                or point.query or point.fragment or not _ENDPOINT_PATH_RE.fullmatch(path) \
                or any(part in (".", "..") for part in path.split("/")):
            raise MediaError("AWS_ENDPOINT_URL_S3 must be the service's address, e.g. "
                             "https://<account>.r2.cloudflarestorage.com or "
                             "https://<project>.supabase.co/storage/v1/s3 (no credentials, no query).")
        # Path-style: a custom endpoint may not have a host name per bucket (Supabase has a path).
        endpoint, path_style = f"{point.scheme}://{point.netloc.lower()}{path}", True
    else:
        # AWS itself: the bucket in the host name, unless a dotted name would break its certificate.
        endpoint, path_style = f"https://s3.{region}.amazonaws.com", "." in bucket
    return S3Location(bucket, prefix, endpoint, region, access_key_id, secret,
                      read("AWS_SESSION_TOKEN") or None, path_style)


def from_setting(value: str | None, *, data_dir: Path, database_url: str | None,
                 read: Callable[[str], str] = lambda name: "") -> FileMedia | S3Location | None:
    """What COMET_MEDIA_URL chooses: a FileMedia, an S3Location (opened by comet.objectstore), or
    None for "in the database". `read` gives the other settings (the S3 credentials)."""
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
        return parse_s3(value, read)
    raise MediaError(f"COMET_MEDIA_URL must be file:, file:/a/folder, s3://bucket/prefix or db: (got {value[:100]!r}).")
