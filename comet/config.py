"""Settings, read from Streamlit secrets first and then the environment.

The secrets mapping is passed in (the app hands over `st.secrets`), so this module never imports
Streamlit and works the same from a script or a test. No key configured means demo mode: the app
then talks to the local stand-in (comet.sim) through the very same client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .client import normalize_base_url

DEFAULT_BASE_URL = "https://api.cometapi.com"
APP_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    # repr=False: a Settings object may end up in a log line or an error report; the key must not.
    api_key: str = field(default="", repr=False)
    base_url: str = DEFAULT_BASE_URL
    data_dir: Path = APP_DIR / "data"
    database_url: str | None = field(default=None, repr=False)  # may hold a password

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
        return cls(
            api_key=read("COMETAPI_KEY"),
            base_url=base_url,
            data_dir=data_dir,
            database_url=read("COMET_DATABASE_URL") or None,
        )
