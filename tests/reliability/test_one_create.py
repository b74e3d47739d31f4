"""One intent, one create (issue #9): clicking Generate again while a slow create is in flight
must not send (and bill) it again, a deliberate second Generate later still sends, and a create
whose answer is lost says it may have been accepted.

The upstream here is a tiny server of this module's own (not the project's stand-in), whose
create answers only after a delay, as CometAPI sometimes does."""

from __future__ import annotations

import base64
import io
import json
import secrets
import string
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from playwright.sync_api import expect

from apphost import AppServer, wait_until_idle
from comet.ui.submit import DOUBLE_CLICK_WINDOW
from conftest import KEY, open_app, wait_until

SCHNELL = "black-forest-labs/flux-schnell"
CREATE_PATH = f"/replicate/v1/models/{SCHNELL}/predictions"


def _png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (40, 120, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SlowUpstream:
    """POST .../predictions answers after `delay` seconds (201 with a new prediction), or, with
    `drop`, closes the connection without an answer, or with `refuse` answers 422; GET /replicate/v1/predictions/{id} says
    succeeded with a data: URI image. Every POST is counted as it arrives."""

    def __init__(self, delay: float = 6.0, drop: bool = False, refuse: bool = False) -> None:
        self.delay, self.drop, self.refuse = delay, drop, refuse
        self.posts: list[dict] = []  # {"at": monotonic arrival, "path", "json"}
        self.answered = 0
        self.predictions: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with upstream._lock:
                    upstream.posts.append({"at": time.monotonic(), "path": self.path, "json": body})
                upstream._stopping.wait(upstream.delay)
                if not self.path.endswith("/predictions") or upstream.drop:
                    self.close_connection = True  # no answer at all
                    return
                if upstream.refuse:
                    self._json(422, {"title": "Invalid input", "detail": "prompt: too long", "status": 422})
                    return
                alphabet = string.ascii_lowercase + string.digits
                prediction = {
                    "id": "".join(secrets.choice(alphabet) for _ in range(26)),
                    "model": self.path.split("/models/", 1)[1].rsplit("/predictions", 1)[0],
                    "version": "hidden", "status": "starting", "input": body.get("input", {}),
                    "output": None, "error": None, "logs": "", "created_at": _now(),
                }
                with upstream._lock:
                    upstream.predictions[prediction["id"]] = prediction
                    upstream.answered += 1
                self._json(201, prediction)

            def do_GET(self):
                prediction_id = self.path.rsplit("/", 1)[-1]
                with upstream._lock:
                    prediction = upstream.predictions.get(prediction_id)
                if not self.path.startswith("/replicate/v1/predictions/") or prediction is None:
                    self._json(404, {"detail": "Not found."})
                    return
                self._json(200, {**prediction, "status": "succeeded", "output": _png_data_uri(),
                                 "started_at": prediction["created_at"], "completed_at": _now(),
                                 "metrics": {"predict_time": 0.4}})

        return Handler

    def post_count(self) -> int:
        with self._lock:
            return len(self.posts)

    def __enter__(self) -> SlowUpstream:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


# ---- AppTest: the page's states, run in process ---------------------------------------------------


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


# ---- a real Chromium against `streamlit run` --------------------------------------------------------


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def open_with_prompt(page, app: AppServer, prompt: str):
    page.goto(app.url)
    wait_until_idle(page)
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(prompt)
    box.press("Tab")  # Streamlit commits a text area on blur
    wait_until_idle(page)
    button = page.get_by_role("button", name="Generate")
    box = button.bounding_box()
    return button, (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


@pytest.mark.e2e
def test_three_clicks_during_a_6_s_create_send_one_post(browser, page, tmp_path):
    with SlowUpstream(delay=6.0) as upstream, \
            AppServer(tmp_path, env={"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": upstream.url}) as app:
        generate, (x, y) = open_with_prompt(page, app, "a lighthouse in a storm")
        generate.click()
        clicked = time.monotonic()
        for n in (1, 2):  # the impatient user, 1.5 s apart, where Generate was
            time.sleep(clicked + 1.5 * n - time.monotonic())
            page.mouse.click(x, y)
        sending = page.get_by_role("button", name="Sending")
        shown_sending = sending.is_visible() and sending.is_disabled()
        in_flight = upstream.answered == 0
        expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=30_000)
        to_image = time.monotonic() - clicked
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()
        time.sleep(2.0)  # a queued click would have been replayed by now
        assert upstream.post_count() == 1, [round(p["at"] - clicked, 1) for p in upstream.posts]
        assert upstream.posts[0]["path"] == CREATE_PATH
        assert in_flight and shown_sending, "no disabled Sending… while the create was in flight"
        print(f"\nPOSTs: {upstream.post_count()} for 3 clicks; image on screen {to_image:.1f} s after "
              f"the first click (create answers after {upstream.delay:.0f} s)")
        expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.e2e
def test_a_click_queued_behind_the_sending_run_is_refused_and_a_later_one_sends(browser, page, tmp_path):
    with SlowUpstream(delay=3.0) as upstream, \
            AppServer(tmp_path, env={"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": upstream.url}) as app:
        generate, (x, y) = open_with_prompt(page, app, "a fox in snow")
        generate.click()
        time.sleep(0.3)
        page.mouse.click(x, y)  # Generate is still enabled: the run that sends is busy waiting
        expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=30_000)
        time.sleep(DOUBLE_CLICK_WINDOW + 1.0)
        assert upstream.post_count() == 1, "the queued click sent again"
        page.get_by_role("button", name="Generate").click()  # asking once more, on purpose
        wait_until(lambda: upstream.post_count() == 2, timeout=10)
        expect(page.get_by_role("button", name="Sending")).to_be_disabled()
        wait_until(lambda: upstream.answered == 2, timeout=10)
        second = list(upstream.predictions)[1]
        card_link = page.locator(f'[data-testid="stPageLink-NavLink"][href$="id={second}"]:visible')
        expect(card_link.first).to_be_visible(timeout=30_000)  # its card
        assert upstream.post_count() == 2
