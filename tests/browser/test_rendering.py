"""Prompts, logs, errors and anything else from users or the API are shown as text: no HTML or
script from them runs, no markdown link from them becomes `javascript:`, and no link or image
they spell out (markdown or a bare URL / e-mail address) becomes a real one."""

from __future__ import annotations

import re
import time
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect, sync_playwright

from comet.config import Settings
from comet.prediction import Prediction
from comet.store import Store, predictions
from comet.ui.safe import WORD_JOINER, badge_label, plain
from support.apphost import AppServer, launch_chromium, wait_until_idle

HOSTILE = (
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script> "
    "[click me](javascript:document.title='pwned') **bold** :red[red] $x^2$"
)
ID = "hostile0prediction0000001"


PHISH = "[log in](https://evil.example) ![x](https://other.host/pixel.png)"
BARE = "see https://evil.example/path or www.evil.example, or write to admin@evil.example (mailto:admin@evil.example)"

# remark-gfm's autolink literals (mdast-util-gfm-autolink-literal), which Streamlit's markdown
# runs on text whose backslash escapes are already resolved. JavaScript's \w is ASCII-only.
GFM_URL = re.compile(r"(?<![\da-z])(https?://|www(?=\.))([\w-]*\.[\w\-.]*)", re.IGNORECASE | re.ASCII)
GFM_EMAIL = re.compile(r"(?<![\w+\-.])([\w+\-.]+)@([\w-]+(?:\.[\w-]+)+)", re.ASCII)


def as_remark_sees_it(escaped: str) -> str:
    return re.sub(r"\\(.)", r"\1", escaped)


def visible(text: str) -> str:
    """What a reader sees (and reads aloud): the word joiner has no width."""
    return text.replace(WORD_JOINER, "")


def test_plain_escapes_every_markdown_and_html_construct():
    escaped = plain(HOSTILE)
    # Every character markdown, HTML or Streamlit's directives act on is backslash-escaped.
    assert re.search(r"(?<!\\)[<>\[\]()*:$`]", escaped) is None
    assert visible(escaped.replace("\\", "")) == HOSTILE


def test_bare_urls_and_addresses_survive_as_text_but_not_as_autolinks():
    text = PHISH + " " + BARE + " HTTPS://EVIL.EXAMPLE WWW.EVIL.EXAMPLE xmpp:admin@evil.example"
    # The raw text is full of what GFM links (so this test can tell)...
    assert GFM_URL.search(text) and GFM_EMAIL.search(text)
    seen = as_remark_sees_it(plain(text))
    # ...and after plain(), even with its escapes resolved, none of it matches.
    assert GFM_URL.search(seen) is None
    assert GFM_EMAIL.search(seen) is None
    assert not re.search(r"(mailto|xmpp):", seen, re.IGNORECASE)
    assert visible(seen) == text  # a reader sees every character, as sent


def test_ordinary_text_is_left_as_it_reads():
    assert plain("a red fox in snow") == "a red fox in snow"
    assert WORD_JOINER not in plain("the www is 3 dots. http status 200: ok")
    assert plain("x" * 50, limit=10) == "x" * 10 + "…"


def test_a_badge_label_is_escaped_once_since_st_badge_escapes_brackets_itself():
    label = badge_label(PHISH)
    # st.badge puts "[" and "]" behind a backslash: ours would make that "\\[", closing the badge.
    assert "\\[" not in label and "\\]" not in label and "[" in label
    # Everything else is escaped as plain() does: no "(" or "!" or ":" acts.
    assert re.search(r"(?<!\\)[()!:]", label) is None
    assert badge_label("starting") == "starting"


@pytest.mark.e2e
def test_hostile_text_from_the_api_is_shown_as_text_in_a_real_browser(tmp_path):
    store = Store.for_settings(Settings.from_sources({}, {"COMET_DATA_DIR": str(tmp_path)}))
    store.record(Prediction.from_json({
        "id": ID, "model": "black-forest-labs/flux-schnell", "status": "failed", "error": HOSTILE,
        "input": {"prompt": HOSTILE}, "logs": HOSTILE, "created_at": "2026-11-25T10:00:00Z",
        "completed_at": "2026-11-25T10:00:05Z",
    }))
    store.update(Prediction.from_json({
        "id": ID, "model": "black-forest-labs/flux-schnell", "status": "failed", "error": HOSTILE,
        "input": {"prompt": HOSTILE}, "logs": HOSTILE, "created_at": "2026-11-25T10:00:00Z",
        "completed_at": "2026-11-25T10:00:05Z",
    }))
    store.close()
    with AppServer(tmp_path) as app, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(f"{app.url}/history?id={ID}")
        wait_until_idle(page)
        main = page.get_by_test_id("stMain")
        error = main.get_by_test_id("stAlert").filter(has_text="Failed")
        # Shown literally: markdown would have eaten the brackets, the asterisks and the tags.
        expect(error).to_contain_text("[click me](javascript:document.title='pwned') **bold** :red[red]")
        expect(error).to_contain_text("<script>")
        assert page.title() != "pwned"
        assert page.locator("a[href^='javascript']").count() == 0
        assert main.locator("img[src='x']").count() == 0
        assert main.locator("script").count() == 0
        browser.close()


PHISH_ID = "phishing0prediction000001"


def hostile_row(**values) -> dict:
    """A row as an older release stored an answer: unchecked, straight into the table."""
    now = time.time()
    return {"model": "black-forest-labs/flux-schnell", "input": "{}", "prompt": "", "logs_tail": "",
            "created_at": now, "recorded_at": now, "updated_at": now, "poll_failures": 0,
            "tracking": "done", "output_urls": "[]", "data_removed": False, "output_count": 0, **values}


@pytest.mark.e2e
def test_links_and_images_spelled_out_by_the_api_stay_text_in_a_real_browser(tmp_path):
    Store.for_settings(Settings.from_sources({}, {"COMET_DATA_DIR": str(tmp_path)})).close()
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(tmp_path / "history-demo.sqlite")))
    with engine.begin() as conn:
        conn.execute(sa.insert(predictions).values(hostile_row(
            id=PHISH_ID, status=PHISH, error=f"{PHISH} {BARE}", note=BARE, logs_tail=f"{PHISH}\n{BARE}",
            prompt=f"{PHISH} {BARE}", input='{"prompt": "x"}')))
    engine.dispose()
    with AppServer(tmp_path) as app, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))

        def nothing_links_out(what: str) -> None:
            assert page.locator('a[href*="evil.example"]').count() == 0, what
            assert page.locator('a[href^="mailto:"], a[href^="xmpp:"]').count() == 0, what
            assert page.locator('img[src*="other.host"]').count() == 0, what

        page.goto(f"{app.url}/history?id={PHISH_ID}")
        wait_until_idle(page)
        main = page.get_by_test_id("stMain")
        error = main.get_by_test_id("stAlert").filter(has_text="evil.example/path")
        expect(error).to_be_visible()
        # Every hostile string is still there to read, literally: the error line (status and
        # error), the note under it, the status badge (its first 24 characters).
        assert PHISH in visible(error.inner_text()) and BARE in visible(error.inner_text())
        shown = visible(main.inner_text())
        assert shown.count(BARE) == 3, "the prompt, the error and the note"
        assert shown.count("[log in](https://evil.ex…") == 2, "the badge and the error line's status"
        assert "\\" not in shown, "escapes are not visible: nothing was escaped twice"
        nothing_links_out("detail view")
        main.get_by_text("Logs", exact=True).click()
        expect(main.get_by_test_id("stCode").filter(has_text="evil.example/path")).to_be_visible()
        nothing_links_out("detail view, logs open")

        page.goto(f"{app.url}/history")  # the list: table, filters
        wait_until_idle(page)
        expect(page.get_by_test_id("stDataFrame")).to_be_visible()
        nothing_links_out("history list")

        page.goto(f"{app.url}/history?id={quote('https://evil.example', safe='')}")
        wait_until_idle(page)
        refused = page.get_by_test_id("stMain").get_by_test_id("stAlert").filter(has_text="not a valid prediction id")
        expect(refused).to_be_visible()
        assert "“https://evil.example” is not a valid prediction id" in visible(refused.inner_text())
        nothing_links_out("crafted ?id=")
        # The browser never fetched from either host (a remote image would have, on every view).
        assert not [url for url in asked if (urlsplit(url).hostname or "").endswith(("other.host", "evil.example"))]
        browser.close()
