"""Output images in S3-compatible object storage (AWS S3, Cloudflare R2, Supabase Storage, MinIO):
the media store for `COMET_MEDIA_URL=s3://bucket/prefix`.

Four calls are all the app needs (put, get, delete, and a check of the bucket), so they are made
here with `requests` and AWS Signature Version 4 rather than with an SDK: boto3 and
botocore are a 15 MB install and half a second of import for those four calls, and an SDK's own
retries and timeouts would sit outside `comet.net`'s wall-clock deadline and size cap, which
every other call the app makes obeys. Every provider above speaks SigV4.

The bucket's answers are read like any other: within a deadline, up to a cap, errors reduced to
their S3 code. The secret key never leaves the process; only signatures made with it do."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import requests

from . import net, redact
from .config import Settings
from .media import FileMedia, MediaStore, MediaUnavailable, S3Location, check_key, from_setting, media_key

CALL_SECONDS = 60.0  # one whole request, however slowly the bucket answers
CONNECT_SECONDS = 5.0
MAX_OBJECT_BYTES = 128 * 1024 * 1024  # far above any output image (36 MP as PNG is ~100 MB)
MAX_ERROR_BYTES = 64 * 1024
RETRY_DELAYS = (0.25, 1.0)  # a dropped connection or a 5xx/SlowDown, then try again
_CODE_RE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
            "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed"}
_ALGORITHM = "AWS4-HMAC-SHA256"


class S3Media:
    """Objects `<prefix><sha256>.<ext>` in one bucket. Thread-safe (one pooled session)."""

    kind = "s3"

    def __init__(self, location: S3Location, *, call_seconds: float = CALL_SECONDS,
                 max_bytes: int = MAX_OBJECT_BYTES, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.location = location
        redact.register(location.secret_access_key)  # kept out of every log line, whatever happens
        self.call_seconds = call_seconds
        self.max_bytes = max_bytes
        self.retry_delays = tuple(retry_delays)
        self._session = net.session(net.BoundedAdapter(pool_connections=1, pool_maxsize=8))
        self._keys: dict[str, bytes] = {}  # signing keys by date
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Media({str(self.location)!r})"

    def close(self) -> None:
        self._session.close()

    # ---- the media store interface (as FileMedia) ---------------------------------------------

    def put(self, data: bytes, content_type: str) -> str:
        """Store `data`; returns its key. Idempotent (the key is the content's hash), and the
        bucket checks the body against its signed SHA-256, so a cut-off upload is never stored."""
        key = media_key(data, content_type)
        self._call("PUT", key, body=data, headers={"Content-Type": content_type,
                                                     "Cache-Control": "private, max-age=31536000, immutable"})
        return key

    def get(self, key: str) -> bytes | None:
        """The bytes, or None when the bucket has no such object (deleted, or pruned)."""
        response = self._call("GET", check_key(key), missing_ok=True)
        return None if response is None else response

    def delete(self, key: str) -> None:
        self._call("DELETE", check_key(key), missing_ok=True)

    def check(self) -> None:
        """Ask the bucket whether it is there and takes these credentials (HEAD bucket);
        MediaUnavailable says what is wrong."""
        self._call("HEAD", None)

    # ---- requests ------------------------------------------------------------------------------

    def _call(self, method: str, key: str | None, *, body: bytes = b"",
              headers: Mapping[str, str] | None = None, missing_ok: bool = False) -> bytes | None:
        attempts = (0.0, *self.retry_delays)
        for n, delay in enumerate(attempts):
            time.sleep(delay)
            last = n == len(attempts) - 1
            try:
                return self._once(method, key, body, headers or {}, missing_ok)
            except _Transient as exc:
                if last:
                    raise MediaUnavailable(f"the bucket {self.location} did not answer ({exc})") from None
        raise AssertionError("unreachable")

    def _once(self, method: str, key: str | None, body: bytes, headers: Mapping[str, str],
              missing_ok: bool) -> bytes | None:
        url, host, path = self._address(key)
        payload_hash = hashlib.sha256(body).hexdigest()
        now = datetime.now(UTC)
        signed = {"host": host, "x-amz-date": _stamps(now, self.location.region)[0],
                  "x-amz-content-sha256": payload_hash}
        if self.location.session_token:
            signed["x-amz-security-token"] = self.location.session_token
        signed.update({name.lower(): value for name, value in headers.items()})
        signature = self._signature(method, path, "", signed, payload_hash, now)
        scope = _stamps(now, self.location.region)[1]
        sent = {name: value for name, value in signed.items() if name != "host"}
        sent["Authorization"] = (f"{_ALGORITHM} Credential={self.location.access_key_id}/{scope}, "
                                 f"SignedHeaders={';'.join(sorted(signed))}, Signature={signature}")
        try:
            with net.bounded(self.call_seconds):
                response = self._session.request(method, url, data=body or None, headers=sent, stream=True,
                                                 allow_redirects=False,
                                                 timeout=(CONNECT_SECONDS, self.call_seconds))
                with response:
                    if response.status_code == 404 and missing_ok:
                        return None
                    if response.status_code >= 300:
                        code = _error_code(net.read_capped(response, MAX_ERROR_BYTES) if method != "HEAD" else b"")
                        raise self._refusal(response.status_code, code)
                    if method == "GET":
                        return net.read_capped(response, self.max_bytes)
                    return b""
        except net.TooLarge as exc:
            raise MediaUnavailable(f"an object in {self.location} is larger than allowed ({exc})") from None
        except (net.DeadlineExpired, requests.RequestException, OSError) as exc:
            raise _Transient(_reason(exc)) from None

    def _refusal(self, status: int, code: str) -> Exception:
        where = str(self.location)
        if status in (500, 502, 503, 504) or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
            return _Transient(f"HTTP {status} {code}".strip())
        if code in _REFUSED or status in (401, 403):
            return MediaUnavailable(f"the bucket {where} refused the credentials ({code or f'HTTP {status}'}): "
                                    "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's permissions")
        if code == "NoSuchBucket" or status == 404:
            return MediaUnavailable(f"the bucket {where} does not exist at {self.location.endpoint}")
        return MediaUnavailable(f"the bucket {where} answered HTTP {status} {code}".strip())

    def _address(self, key: str | None) -> tuple[str, str, str]:
        """(url, host header, canonical path) of the bucket (key None) or one of its objects."""
        where = self.location
        parts = urlsplit(where.endpoint)
        host = parts.netloc
        object_path = "/" + quote(where.prefix + key, safe="/-_.~") if key else "/"
        if where.path_style:
            path = f"{parts.path}/{where.bucket}" + (object_path if key else "")
        else:
            host, path = f"{where.bucket}.{host}", object_path
        return f"{parts.scheme}://{host}{path}", host, path

    def _signature(self, method: str, path: str, canonical_query: str, headers: Mapping[str, str],
                   payload_hash: str, when: datetime) -> str:
        names = sorted(headers)
        canonical = "\n".join([method, path, canonical_query,
                               "".join(f"{name}:{' '.join(str(headers[name]).split())}\n" for name in names),
                               ";".join(names), payload_hash])
        stamp, scope = _stamps(when, self.location.region)
        to_sign = "\n".join([_ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        return hmac.new(self._signing_key(stamp[:8]), to_sign.encode(), hashlib.sha256).hexdigest()

    def _signing_key(self, day: str) -> bytes:
        with self._lock:
            key = self._keys.get(day)
            if key is None:
                key = ("AWS4" + self.location.secret_access_key).encode()
                for part in (day, self.location.region, "s3", "aws4_request"):
                    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
                self._keys = {day: key}  # one day's key at a time
            return key


class _Transient(Exception):
    """Worth another attempt: no answer, a cut-off one, or the service's own trouble."""


def open_media(choice: FileMedia | S3Location | None) -> MediaStore | None:
    """The media store for what COMET_MEDIA_URL chose (comet.media.from_setting)."""
    return S3Media(choice) if isinstance(choice, S3Location) else choice


def media_for(settings: Settings) -> MediaStore | None:
    """The configured media store: a bucket, a folder, or None (inside the database)."""
    return open_media(settings.s3 or from_setting(settings.media_url, data_dir=settings.data_dir,
                                                  database_url=settings.database_url))


def _stamps(when: datetime, region: str) -> tuple[str, str]:
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return stamp, f"{stamp[:8]}/{region}/s3/aws4_request"


def _error_code(body: bytes) -> str:
    found = _CODE_RE.search(body)
    return found.group(1).decode() if found else ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, net.DeadlineExpired):
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__
