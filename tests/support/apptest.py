"""The app under Streamlit's AppTest: opening it on a page, and reading what Generate would send."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from support import ROOT

APP = ROOT / "streamlit_app.py"


def open_app(page: str | None = None, query: dict | None = None, **secrets) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for name, value in secrets.items():
        at.secrets[name] = value
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def sent_body(at: AppTest) -> dict:
    """The request body the Create page shows in its JSON tab (what Generate would send)."""
    for block in at.code:
        if block.language == "json":
            return json.loads(block.value)
    raise AssertionError("no JSON request preview on the page")
