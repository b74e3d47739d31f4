"""One intent, one create (issue #9): clicking Generate again while a slow create is in flight
must not send (and bill) it again, a deliberate second Generate later still sends, and a create
whose answer is lost says it may have been accepted.

The upstream here is tests/support/slow_upstream.py, whose create answers only after a delay, as
CometAPI sometimes does. Clicks in a real Chromium: tests/browser/test_one_create_browser.py."""

from __future__ import annotations

import time

import pytest

from comet.ui.submit import DOUBLE_CLICK_WINDOW
from support.api import KEY
from support.apptest import open_app
from support.slow_upstream import SlowUpstream
from support.waiting import wait_until


def live_page(upstream: SlowUpstream, prompt: str):
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=upstream.url)
    at.text_area(key="param.prompt").input(prompt).run()
    return at


def generate_button(at):
    return next((b for b in at.button if b.label.startswith("Generate")), None)


def sending_button(at):
    return next((b for b in at.button if b.label.startswith("Sending")), None)


@pytest.mark.usefixtures("app_env")
def test_a_deliberate_second_generate_after_the_double_click_window_sends_again():
    with SlowUpstream(delay=0.0) as upstream:
        at = live_page(upstream, "a kite over dunes")
        generate_button(at).click().run()
        assert upstream.post_count() == 1
        time.sleep(DOUBLE_CLICK_WINDOW + 0.3)  # a person deciding to run it once more
        generate_button(at).click().run()
        assert not at.exception
        assert upstream.post_count() == 2
        assert upstream.posts[0]["json"] == upstream.posts[1]["json"]
        assert any(h.value == "Earlier in this session" for h in at.subheader)  # both kept


@pytest.mark.usefixtures("app_env")
def test_a_second_generate_right_after_the_first_is_the_same_click():
    with SlowUpstream(delay=0.0) as upstream:
        at = live_page(upstream, "a kite over dunes")
        generate_button(at).click().run()
        generate_button(at).click().run()  # within DOUBLE_CLICK_WINDOW of the answer
        assert not at.exception
        assert upstream.post_count() == 1


@pytest.mark.usefixtures("app_env")
def test_a_slow_create_shows_sending_instead_of_generate_then_its_card():
    with SlowUpstream(delay=3.0) as upstream:
        at = live_page(upstream, "a slow lighthouse")
        started = time.monotonic()
        generate_button(at).click().run()
        assert time.monotonic() - started < 2.5, "the click's run waited for the whole create"
        assert not at.exception
        assert generate_button(at) is None, "Generate can be pressed while a create is in flight"
        assert sending_button(at) is not None and sending_button(at).disabled
        assert upstream.post_count() == 1
        at.run()  # any rerun meanwhile (another widget, a tick) sends nothing either
        assert generate_button(at) is None and upstream.post_count() == 1
        wait_until(lambda: upstream.answered == 1, timeout=10)
        time.sleep(0.3)  # the app's thread records what it read
        at.run()
        assert generate_button(at) is not None and sending_button(at) is None
        prediction_id = next(iter(upstream.predictions))
        assert any(link.proto.query_string == f"id={prediction_id}" for link in at.get("page_link")), \
            "no card for the prediction"
        assert upstream.post_count() == 1


@pytest.mark.usefixtures("app_env")
def test_a_create_whose_answer_is_lost_says_it_may_have_been_accepted():
    with SlowUpstream(delay=2.0, drop=True) as upstream:
        at = live_page(upstream, "keep this prompt")
        generate_button(at).click().run()
        assert sending_button(at) is not None
        wait_until(lambda: generate_button(at.run()) is not None, timeout=15, pause=0.3)
        assert not at.exception
        shown = " ".join(w.value for w in at.warning)
        assert "may have been accepted" in shown
        assert not any("may have been accepted" in e.value for e in at.error)
        assert at.text_area(key="param.prompt").value == "keep this prompt"
        assert upstream.post_count() == 1  # never resent by the app


@pytest.mark.usefixtures("app_env")
def test_a_definite_refusal_is_an_error_not_a_maybe():
    with SlowUpstream(delay=0.0, refuse=True) as upstream:
        at = live_page(upstream, "x")
        generate_button(at).click().run()
        assert not at.exception
        assert any("too long" in e.value for e in at.error), "the refusal is not shown"
        assert not any("may have been accepted" in w.value for w in at.warning)
