"""A visitor's own key: used for their tab only, sent only to the configured base URL, and never
written anywhere (not the page, not the history files)."""

from __future__ import annotations

import time

import pytest

from support.api import KEY, api_requests
from support.apptest import open_app

pytestmark = pytest.mark.usefixtures("app_env")
OWN = "sk-visitor-own-key-9876543210zyxwvu"


def use_own_key(at, key=OWN):
    at.text_input(key="own.typed").input(key).run()
    next(b for b in at.sidebar.button if b.label == "Use this key").click().run()
    return at


def generate(at, prompt):
    at.text_area(key="param.prompt").input(prompt).run()
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    return at


def badge(at) -> str:
    return " ".join(str(m.value) for m in at.sidebar.markdown)


def everything_on_screen(at) -> str:
    return "\n".join(str(getattr(e, "value", "")) for e in list(at.main) + list(at.sidebar))


def wait_for_image(at, timeout=15):
    deadline = time.monotonic() + timeout
    while not at.get("image") and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
    return at.get("image")


def test_without_a_server_key_a_visitor_can_go_live_with_their_own(sim, monkeypatch, app_env):
    monkeypatch.setenv("COMETAPI_BASE_URL", sim.url)  # the operator's base URL; no server key
    at = open_app()
    assert "Demo mode" in badge(at)
    use_own_key(at)
    assert "your key" in badge(at)
    generate(at, "my own lighthouse")
    posts = api_requests(sim, "POST")
    assert len(posts) == 1 and posts[0]["headers"]["authorization"] == f"Bearer {OWN}"
    assert wait_for_image(at), "the tracker did not follow the prediction with the visitor's key"
    gets = api_requests(sim, "GET")
    assert gets and all(r["headers"]["authorization"] == f"Bearer {OWN}" for r in gets)
    assert OWN not in everything_on_screen(at)
    for stored in app_env.rglob("*"):
        if stored.is_file():
            assert OWN.encode() not in stored.read_bytes(), stored.name


def test_with_a_server_key_the_visitors_key_replaces_it_for_their_tab_only(sim):
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    use_own_key(at)
    generate(at, "mine")
    other = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)  # another visitor
    generate(other, "theirs")
    by_prompt = {r["json"]["input"]["prompt"]: r["headers"]["authorization"] for r in api_requests(sim, "POST")}
    assert by_prompt == {"mine": f"Bearer {OWN}", "theirs": f"Bearer {KEY}"}


def test_forgetting_the_key_goes_back_to_the_servers_setting(sim):
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    use_own_key(at)
    next(b for b in at.sidebar.button if b.label == "Forget my key").click().run()
    generate(at, "server key again")
    assert api_requests(sim, "POST")[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_a_key_with_spaces_is_refused_with_a_message():
    at = use_own_key(open_app(), "not a key")
    assert any("does not look like an API key" in e.value for e in at.error)
    assert "Demo mode" in badge(at)
