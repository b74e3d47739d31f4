"""Safe download of a prediction's output files, so history keeps them after the URLs expire.

Output URLs come from the API's answer, so they are treated as untrusted: only http(s) links
and base64 `data:image/...` URIs are accepted, every redirect hop is checked again, the socket
connects only to an address that was checked (no second DNS lookup, so rebinding cannot slip
a private address in), and only globally routable addresses pass, by the standard library's
own notion of global (an IPv6 address that embeds an IPv4 one, as NAT64, 6to4, Teredo and
IPv4-mapped addresses do, must embed a global one too). The one exception is the API's own
host when it is the local stand-in. Each download has a wall-clock deadline (headers and body,
however slowly they trickle) and a size cap, and the bytes must be an image Pillow can read
whose header declares a sane number of pixels. No credential is ever sent: the session is
fresh, ignores the environment (netrc, proxies), and URLs with a user name are refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image

from . import net, redact
from .errors import CometError
from .images import MAX_PIXELS
from .media import StoredFile, source_label  # noqa: F401 (the downloader hands these out)

MAX_BYTES = 25 * 1024 * 1024
MAX_REDIRECTS = 3
# Wall-clock limit for one file, redirects included: a server dripping bytes must not hold a
# tracker worker for ever.
MAX_SECONDS = 120.0
# Storage services often label images generically; the bytes then decide (via Pillow).
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


def fetch_output(
    url: str,
    *,
    private_origin: str | None = None,
    max_bytes: int = MAX_BYTES,
    timeout: tuple[float, float] = (5.0, 30.0),
    deadline: float = MAX_SECONDS,
) -> StoredFile:
    """Download (or decode) one output file. Raises FetchError with a clear message on any refusal.
    `private_origin` ("host:port") is the one place that may be on a private address: the API's
    own host when it is the local stand-in, which serves its own files."""
    if url[:5].lower() == "data:":
        return _from_data_uri(url, max_bytes)

    def check(host: str, address: str) -> None:
        if not _is_public(address) and not _same_origin(current, private_origin):
            raise net.AddressRefused(f"{host} is a private, local or reserved address")

    current = url
    with net.session() as session, net.bounded(deadline, check) as clock:
        try:
            for _ in range(MAX_REDIRECTS + 1):
                _check_url(current)
                with _get(session, current, timeout) as response:
                    if not response.is_redirect:
                        return _read_image(response, url, max_bytes)
                    # Followed by hand so that every hop is checked again.
                    current = urljoin(current, response.headers["Location"])
        except net.AddressRefused as exc:
            raise FetchError(f"Refused {_shown(current)}: {exc}.") from None
        except net.DeadlineExpired as exc:
            raise FetchError(f"Could not download {_shown(url)}: slower than {deadline:.0f} s.",
                             retryable=True) from exc
        except requests.RequestException as exc:
            if clock.expired:
                raise FetchError(f"Could not download {_shown(url)}: slower than {deadline:.0f} s.",
                                 retryable=True) from exc
            why = "timed out" if isinstance(exc, requests.Timeout) else "the connection failed"
            raise FetchError(f"Could not download {_shown(current)}: {why}.", retryable=True) from exc
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


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        scheme = f"a {parts.scheme}: URL" if parts.scheme else "a link without a scheme"
        raise FetchError(f"Refused {scheme}: only http(s) URLs and data:image URIs are downloaded.")
    if parts.username is not None or parts.password is not None:
        # requests would turn these into an Authorization header.
        raise FetchError(f"Refused {_shown(url)}: the URL carries a user name or password.")
    try:
        parts.port  # noqa: B018 - reading it raises ValueError on a malformed port
    except ValueError as exc:
        raise FetchError(f"Refused {_shown(url)}: the port is not valid.") from exc


def _same_origin(url: str, origin: str | None) -> bool:
    if not origin:
        return False
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return False
    allowed = urlsplit(f"//{origin}")
    return (parts.hostname or "").lower() == (allowed.hostname or "").lower() and port == allowed.port


def _is_public(address: str) -> bool:
    """Globally routable, by the standard library's definition (not a hand-kept list); an IPv6
    address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) must carry a global one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(_is_public(str(inner)) for inner in embedded if inner is not None)
    return True


def _get(session: requests.Session, url: str, timeout: tuple[float, float]) -> requests.Response:
    return session.get(url, stream=True, timeout=timeout, allow_redirects=False)


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
    try:
        return net.read_capped(response, max_bytes)
    except net.TooLarge as exc:
        raise FetchError(f"Refused {shown}: {exc}.") from None


def _image_type(data: bytes, shown: str) -> str:
    """The real content type of the bytes, or FetchError if they are not a web image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            image.verify()  # reads the file through: catches truncated or corrupt data
            image_format = image.format or ""
    except Exception as exc:  # Pillow reports bad data with many exception types
        raise FetchError(f"Refused {shown}: the bytes are not an image that can be read.") from exc
    if width * height > MAX_PIXELS:
        # A small file can declare a huge canvas; decoding it (thumbnail, display) would take
        # gigabytes. FLUX outputs are a few megapixels.
        raise FetchError(f"Refused {shown}: {width}x{height} pixels is more than the {MAX_PIXELS:,} allowed.")
    content_type = Image.MIME.get(image_format, "")
    if not content_type.startswith("image/"):
        raise FetchError(f"Refused {shown}: a {image_format} file is not a web image.")
    return content_type


def _shown(url: str) -> str:
    """The URL for a message: no user info, query or fragment (signed URLs carry tokens there)."""
    parts = urlsplit(url)
    text = redact.scrub(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}")
    return text if len(text) <= 100 else text[:97] + "..."
