"""Safe download of a prediction's output files, so history keeps them after the URLs expire.

Output URLs come from the API's answer, so they are treated as untrusted: only http(s) links
and base64 `data:image/...` URIs are accepted, every redirect hop is checked again, private and
local hosts are refused (unless the API itself is local, as the stand-in is), the size is capped
while streaming, and the bytes must be an image Pillow can read. No credential is ever sent: the
session is fresh, ignores the environment (netrc, proxies), and URLs with a user name are refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image

from .errors import CometError

MAX_BYTES = 25 * 1024 * 1024
MAX_REDIRECTS = 3
# A server dripping bytes slowly must not hold a tracker worker for ever.
MAX_SECONDS = 120.0
_CHUNK = 64 * 1024
# Storage services often label images generically; the bytes then decide (via Pillow).
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


class FetchError(CometError):
    """An output file was refused or could not be downloaded.

    `retryable` says whether trying again later may work (network trouble, 5xx, 429)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message, status=status)
        self.retryable = retryable

    @property
    def gone(self) -> bool:
        """The host says the file no longer exists (output URLs expire an hour after the run)."""
        return self.status in (404, 410)


@dataclass(frozen=True)
class StoredFile:
    """One downloaded output: its real content type (from the bytes), the bytes, and where it came
    from (see source_label)."""

    content_type: str
    data: bytes = field(repr=False)
    source_url: str


def fetch_output(
    url: str,
    *,
    allow_private: bool,
    max_bytes: int = MAX_BYTES,
    timeout: tuple[float, float] = (5.0, 30.0),
) -> StoredFile:
    """Download (or decode) one output file. Raises FetchError with a clear message on any refusal."""
    if url[:5].lower() == "data:":
        return _from_data_uri(url, max_bytes)
    with requests.Session() as session:
        session.trust_env = False  # no proxy settings or netrc credentials from the environment
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            _check_target(current, allow_private)
            with _get(session, current, timeout) as response:
                if not response.is_redirect:
                    return _read_image(response, url, max_bytes)
                # Followed by hand so that every hop passes _check_target again.
                current = urljoin(current, response.headers["Location"])
    raise FetchError(f"Refused {_shown(url)}: more than {MAX_REDIRECTS} redirects.")


def _from_data_uri(uri: str, max_bytes: int) -> StoredFile:
    header, _, payload = uri.partition(",")
    header = header.lower()
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise FetchError("Refused a data: URI: only base64-encoded data:image/... URIs are accepted.")
    if len(payload) * 3 // 4 > max_bytes:
        raise FetchError(f"Refused a data: URI: larger than {max_bytes} bytes.")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise FetchError("Refused a data: URI: its base64 text is malformed.") from exc
    label = source_label(uri)
    return StoredFile(_image_type(data, label), data, label)


def source_label(url: str) -> str:
    """What to keep of an output's address: a data: URI's payload is the image itself, already
    stored as bytes, so only its header is kept."""
    if url[:5].lower() == "data:":
        return url.partition(",")[0] + ",..."
    return url


def _check_target(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        scheme = f"a {parts.scheme}: URL" if parts.scheme else "a link without a scheme"
        raise FetchError(f"Refused {scheme}: only http(s) URLs and data:image URIs are downloaded.")
    if parts.username is not None or parts.password is not None:
        # requests would turn these into an Authorization header.
        raise FetchError(f"Refused {_shown(url)}: the URL carries a user name or password.")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise FetchError(f"Refused {_shown(url)}: the port is not valid.") from exc
    if not allow_private:
        for address in _addresses(parts.hostname, port):
            if not _is_public(address):
                raise FetchError(
                    f"Refused {_shown(url)}: {parts.hostname} is a private, local or reserved address."
                )


def _addresses(host: str, port: int) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"Could not resolve {host}.", retryable=True) from exc
    return {info[4][0] for info in infos}


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    # is_global is False for loopback, private, link-local, reserved, shared (CGNAT) and
    # IPv4-mapped local addresses; multicast is excluded separately.
    return ip.is_global and not ip.is_multicast


def _get(session: requests.Session, url: str, timeout: tuple[float, float]) -> requests.Response:
    try:
        return session.get(url, stream=True, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        why = "timed out" if isinstance(exc, requests.Timeout) else "the connection failed"
        raise FetchError(f"Could not download {_shown(url)}: {why}.", retryable=True) from exc


def _read_image(response: requests.Response, source_url: str, max_bytes: int) -> StoredFile:
    shown = _shown(source_url)
    status = response.status_code
    if status != 200:
        retryable = status in (408, 425, 429) or status >= 500
        raise FetchError(f"Could not download {shown}: the server answered {status}.", status=status,
                         retryable=retryable)
    declared = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not (declared.startswith("image/") or declared in _GENERIC_TYPES):
        raise FetchError(f"Refused {shown}: its content type is {declared}, not an image.")
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"Refused {shown}: {int(length)} bytes is more than the {max_bytes} allowed.")
    data = _read_capped(response, shown, max_bytes)
    return StoredFile(_image_type(data, shown), data, source_url)


def _read_capped(response: requests.Response, shown: str, max_bytes: int) -> bytes:
    """The body, stopping as soon as it passes max_bytes (Content-Length may be absent or wrong)."""
    chunks: list[bytes] = []
    size = 0
    started = time.monotonic()
    try:
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"Refused {shown}: larger than the {max_bytes} bytes allowed.")
            if time.monotonic() - started > MAX_SECONDS:
                raise FetchError(f"Could not download {shown}: slower than {MAX_SECONDS:.0f} s.",
                                 retryable=True)
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise FetchError(f"Could not download {shown}: the transfer broke off.", retryable=True) from exc
    return b"".join(chunks)


def _image_type(data: bytes, shown: str) -> str:
    """The real content type of the bytes, or FetchError if they are not a web image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # reads the file through: catches truncated or corrupt data
            image_format = image.format or ""
    except Exception as exc:  # Pillow reports bad data with many exception types
        raise FetchError(f"Refused {shown}: the bytes are not an image that can be read.") from exc
    content_type = Image.MIME.get(image_format, "")
    if not content_type.startswith("image/"):
        raise FetchError(f"Refused {shown}: a {image_format} file is not a web image.")
    return content_type


def _shown(url: str) -> str:
    """The URL for a message: no user info, query or fragment (signed URLs carry tokens there)."""
    parts = urlsplit(url)
    text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return text if len(text) <= 100 else text[:97] + "..."
