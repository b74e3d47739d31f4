"""Settings, read from Streamlit secrets first and then the environment.

The secrets mapping is passed in (the app hands over `st.secrets`), so this module never imports
Streamlit and works the same from a script or a test. No key configured means demo mode: the app
then talks to the local stand-in (comet.sim) through the very same client.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import media, prices

DEFAULT_BASE_URL = "https://api.cometapi.com"
API_PREFIX = "/replicate/v1"  # the Replicate-compatible routes under the base URL


def normalize_base_url(base_url: str) -> str:
    """Validate a base URL (http/https, a host, no query) and drop any trailing slash."""
    parts = urlsplit((base_url or "").strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"Base URL must look like https://api.cometapi.com (got {base_url!r}).")
    if parts.username or parts.password:
        raise ValueError("Base URL must not contain a user name or password.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
APP_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    # repr=False: a Settings object may end up in a log line or an error report; the key must not.
    api_key: str = field(default="", repr=False)
    base_url: str = DEFAULT_BASE_URL
    data_dir: Path = APP_DIR / "data"
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    media_url: str = ""  # COMET_MEDIA_URL: where output images go (comet.media)
    s3: media.S3Location | None = None  # the bucket and its credentials, when media_url is s3://
    media_retention_days: float | None = None  # COMET_MEDIA_RETENTION_DAYS: full images kept this long
    # Spending: USD per image overrides by model id, and the limits (None: no limit).
    prices: Mapping[str, float] = field(default_factory=dict, hash=False)
    spend_limit_monthly: float | None = None
    spend_limit_daily_per_person: float | None = None
    # Batches (comet.batch): creates in flight for the whole app, and predictions per batch.
    batch_concurrency: int = 4
    batch_max: int = 200

    @property
    def demo(self) -> bool:
        return not self.api_key

    @property
    def base_host(self) -> str:
        return urlsplit(self.base_url).netloc

    @classmethod
    def from_sources(
        cls, secrets: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Secrets win over the environment; blank values count as unset.

        Raises ValueError with a user-facing message when COMETAPI_BASE_URL is malformed."""
        secrets = secrets or {}
        environ = os.environ if environ is None else environ

        def read(name: str) -> str:
            for source in (secrets, environ):
                value = source.get(name)
                if value is not None and str(value).strip():
                    return str(value).strip()
            return ""

        try:
            base_url = normalize_base_url(read("COMETAPI_BASE_URL") or DEFAULT_BASE_URL)
        except ValueError as exc:
            raise ValueError(f"COMETAPI_BASE_URL is not usable: {exc}") from None
        data_dir = Path(read("COMET_DATA_DIR") or APP_DIR / "data").expanduser()
        if not data_dir.is_absolute():
            data_dir = APP_DIR / data_dir
        table = secrets.get("prices")
        try:
            overrides = prices.parse_overrides(table if isinstance(table, Mapping) else None,
                                               environ.get("COMET_PRICES"))
        except ValueError as exc:
            raise ValueError(f"Prices are not usable: {exc}") from None
        media_url = read("COMET_MEDIA_URL")
        try:
            chosen = media.from_setting(media_url, data_dir=data_dir,
                                        database_url=read("COMET_DATABASE_URL") or None, read=read)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            media_url=media_url,
            s3=chosen if isinstance(chosen, media.S3Location) else None,
            media_retention_days=_limit("COMET_MEDIA_RETENTION_DAYS", read("COMET_MEDIA_RETENTION_DAYS"), "days"),
            prices=overrides,
            spend_limit_monthly=_limit("SPEND_LIMIT_MONTHLY", read("SPEND_LIMIT_MONTHLY")),
            spend_limit_daily_per_person=_limit("SPEND_LIMIT_DAILY_PER_PERSON", read("SPEND_LIMIT_DAILY_PER_PERSON")),
            batch_concurrency=_whole("COMET_BATCH_CONCURRENCY", read("COMET_BATCH_CONCURRENCY"), 4, 1, 32),
            batch_max=_whole("COMET_BATCH_MAX", read("COMET_BATCH_MAX"), 200, 1, 5000),
            api_key=read("COMETAPI_KEY"),
            base_url=base_url,
            data_dir=data_dir,
            database_url=read("COMET_DATABASE_URL") or None,
        )


def _limit(name: str, text: str, unit: str = "USD") -> float | None:
    """A positive amount (a spending limit in USD, a number of days): blank is none."""
    if not text:
        return None
    try:
        value = float(text.removeprefix("$").replace(",", ""))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number of {unit} above 0, e.g. 25 (got {text!r}).")
    return value


def _whole(name: str, text: str, default: int, low: int, high: int) -> int:
    """A whole number from `low` to `high`: blank is the default."""
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, e.g. {default} (got {text!r}).")
    return value
