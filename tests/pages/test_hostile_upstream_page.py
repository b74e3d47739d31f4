"""The key a hostile upstream echoes never reaches the History page, and a key an older release
stored is masked when the app starts. The upstream is tests/support/hostile.py; the client,
downloader and tracker against it: tests/core/test_hostile_upstream.py."""

from __future__ import annotations

import pytest

from comet.config import Settings
from comet.export import spreadsheet_csv
from comet.prediction import Prediction
from comet.store import Store
from support import hostile
from support.api import KEY
from support.apptest import open_app

SCHNELL = "black-forest-labs/flux-schnell"


def pid(n: int | str) -> str:
    return f"hostile{n}".ljust(26, "0")


@pytest.fixture
def upstream():
    with hostile.HostileServer() as server:
        yield server


def test_an_echoed_key_never_reaches_the_page(upstream, app_env):
    """Tracking a prediction whose every field echoes the key: the page shows the error, masked."""
    echoed = pid("page")
    upstream.status_route(echoed, hostile.echo_key)
    at = open_app("pages/history.py", COMETAPI_KEY=KEY, COMETAPI_BASE_URL=upstream.url)
    box = next(t for t in at.text_input if t.label == "Prediction id")
    box.input(echoed)
    next(b for b in at.button if b.label == "Track this prediction").click().run()
    at.run()
    shown = "\n".join(str(getattr(e, "value", "")) for e in list(at.main) + list(at.sidebar))
    assert not at.exception
    assert "bad request from ***" in shown.replace("\\", "")  # the error is shown (escaped), masked
    assert KEY not in shown and KEY not in str(at.query_params)


def test_a_key_stored_by_an_older_release_is_masked_when_the_app_starts(upstream, app_env):
    settings = Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(app_env)})
    old = Store.for_settings(settings)
    # As an older release stored an echoing upstream's answer (Prediction built without scrubbing).
    old.record(Prediction(id=pid("old"), model=SCHNELL, status="failed", error=f"bad key {KEY}",
                          logs=f"Bearer {KEY}", input={"prompt": "old"}))
    old.record(Prediction(id=pid("clean"), model=SCHNELL, status="failed", error="nothing secret"))
    old.close()

    at = open_app("pages/history.py", COMETAPI_KEY=KEY, COMETAPI_BASE_URL=upstream.url)
    assert not at.exception
    check = Store.for_settings(settings)
    try:
        leaked, clean = check.get(pid("old")), check.get(pid("clean"))
        assert (leaked.error, leaked.logs_tail) == ("bad key ***", "Bearer ***")
        assert clean.error == "nothing secret"
        assert KEY not in spreadsheet_csv(check.export_rows())
    finally:
        check.close()
