"""The CometAPI stand-in, driven over real sockets by a client written only from api-contract.md.

The client below deliberately uses urllib and nothing from comet/ except Sim itself, so these
tests check the stand-in against the contract, not against our own client's assumptions.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from itertools import pairwise
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
from PIL import Image

from comet.sim import FAULT_KINDS, FAULT_ROUTES, Sim
from support import ROOT

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


class Resp(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The contract: a 301 means "wrong base URL", never follow it with the key.
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def call(method, url, body=None, key="test-key", raw=None, timeout=5.0) -> Resp:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {} if data is None else {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Resp(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Resp(err.code, err.headers, err.read())


def create(base, model, inp, **kw) -> Resp:
    url = f"{base}/replicate/v1/models/black-forest-labs/{model}/predictions"
    return call("POST", url, {"input": inp}, **kw)


def get(base, pid, **kw) -> Resp:
    return call("GET", f"{base}/replicate/v1/predictions/{pid}", **kw)


def cancel(base, pid, **kw) -> Resp:
    return call("POST", f"{base}/replicate/v1/predictions/{pid}/cancel", **kw)


def poll(base, pid, timeout=5.0) -> list[dict]:
    """Every observation until a terminal status (or an error), as the contract says to stop."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = get(base, pid)
        assert resp.status == 200
        seen.append(resp.json())
        if seen[-1]["status"] in TERMINAL or seen[-1]["error"]:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"prediction {pid} not terminal after {timeout}s: {seen[-1]['status']}")


def run(base, model, inp) -> dict:
    resp = create(base, model, inp)
    assert resp.status == 201, resp.body
    return poll(base, resp.json()["id"])[-1]


def assert_envelope(resp, status, code=""):
    assert resp.status == status
    assert resp.headers["Content-Type"] == "application/json"
    err = resp.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("comet_api_error", "", code)
    rid = resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[A-Z0-9]{20}", rid)
    assert err["message"].endswith(f" (request id: {rid})")
    return err["message"]


@pytest.fixture
def sim():
    with Sim(start_delay=0.05, run_time=0.2) as s:
        yield s


# -- outputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model, extra, shape, fmt, ratio", [
    ("flux-schnell", {"num_outputs": 3, "output_format": "png", "aspect_ratio": "16:9"},
     3, "PNG", 16 / 9),
    ("flux-dev", {"aspect_ratio": "9:16"}, 1, "WEBP", 9 / 16),
    ("flux-pro", {"aspect_ratio": "custom", "width": 1024, "height": 512, "output_format": "jpg"},
     None, "JPEG", 2.0),
    ("flux-1.1-pro", {"image_prompt": "https://example.com/ref.png"}, None, "WEBP", 1.0),
    ("flux-1.1-pro-ultra", {"aspect_ratio": "21:9"}, None, "JPEG", 21 / 9),
    ("flux-kontext-pro", {}, None, "PNG", 1.0),
    ("flux-kontext-max", {"aspect_ratio": "2:1", "output_format": "jpg",
                          "input_image": "data:image/png;base64,AAAA",
                          "input_image_2": "https://example.com/b.png"}, None, "JPEG", 2.0),
    ("flux-2-pro", {"input_images": ["https://example.com/a.png"] * 8, "aspect_ratio": "3:2"},
     None, "WEBP", 3 / 2),
    ("flux-2-dev", {"output_format": "png", "aspect_ratio": "4:5"}, None, "PNG", 4 / 5),
    ("flux-2-flex", {"aspect_ratio": "custom"}, None, "WEBP", 1.0),
])
def test_each_model_output_shape_and_real_image(sim, model, extra, shape, fmt, ratio):
    done = run(sim.url, model, {"prompt": "a red fox", **extra})
    assert done["status"] == "succeeded"
    output = done["output"]
    if shape is None:
        assert isinstance(output, str)
        output = [output]
    else:
        assert isinstance(output, list) and len(output) == shape
    assert done["metrics"]["image_count"] == len(output)
    for url in output:
        resp = call("GET", url, key=None)  # files need no key, like replicate.delivery
        assert resp.status == 200
        assert resp.headers["Content-Type"] == Image.MIME[fmt]
        img = Image.open(io.BytesIO(resp.body))
        assert img.format == fmt
        assert img.width / img.height == pytest.approx(ratio, rel=0.02)
        assert max(img.size) <= 1024


def test_prediction_object_fields_and_foreign_urls(sim):
    inp = {"prompt": "paper boat", "aspect_ratio": "1:1", "output_quality": 80, "extra": [1]}
    resp = create(sim.url, "flux-schnell", inp)
    assert resp.status == 201
    pred = resp.json()
    pid = pred["id"]
    assert re.fullmatch(r"[a-z0-9]{26}", pid)
    assert (pred["model"], pred["version"], pred["source"]) == (
        "black-forest-labs/flux-schnell", "hidden", "api")
    assert pred["input"] == inp
    assert (pred["status"], pred["output"], pred["error"], pred["logs"]) == ("starting", None, None, "")
    assert pred["data_removed"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pred["created_at"])
    assert pred["urls"]["get"] == f"https://api.replicate.com/v1/predictions/{pid}"
    assert pred["urls"]["cancel"] == f"https://api.replicate.com/v1/predictions/{pid}/cancel"
    assert pred["urls"]["web"] == f"https://replicate.com/p/{pid}"
    assert urlsplit(pred["urls"]["stream"]).hostname == "stream.replicate.com"
    assert urlsplit(pred["urls"]["stream"]).hostname != urlsplit(sim.url).hostname


# shape: the list length expected, or None for a single string.
@pytest.mark.parametrize("style, model, extra, shape", [
    ("data_uri", "flux-schnell", {"num_outputs": 2}, 2),
    ("data_uri", "flux-pro", {"output_format": "png"}, None),
    ("string", "flux-schnell", {"num_outputs": 2}, None),
    ("list", "flux-1.1-pro", {}, 1),
])
def test_output_styles(sim, style, model, extra, shape):
    sim.output_style = style
    out = run(sim.url, model, {"prompt": "style", **extra})["output"]
    if shape is None:
        assert isinstance(out, str)
        out = [out]
    else:
        assert isinstance(out, list) and len(out) == shape
    for item in out:
        if style == "data_uri":
            header, _, data = item.partition(",")
            assert re.fullmatch(r"data:image/(webp|png);base64", header)
            Image.open(io.BytesIO(base64.b64decode(data))).verify()
        else:
            assert item.startswith(f"{sim.url}/files/")


# -- errors ------------------------------------------------------------------------------------

def test_auth_missing_and_wrong_key():
    with Sim(key="right", start_delay=0.05, run_time=0.2) as s:
        missing = create(s.url, "flux-schnell", {"prompt": "x"}, key=None)
        assert "Missing Authorization header" in assert_envelope(missing, 401)
        wrong = create(s.url, "flux-schnell", {"prompt": "x"}, key="wrong")
        assert "Invalid token" in assert_envelope(wrong, 401)
        assert missing.headers["X-Request-Id"] != wrong.headers["X-Request-Id"]
        assert get(s.url, "whatever", key="wrong").status == 401
        assert create(s.url, "flux-schnell", {"prompt": "x"}, key="right").status == 201
        assert len(s.predictions) == 1


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"prompt": "no input"}',
                                 b'{"input": "text"}'])
def test_bad_body_is_400(sim, raw):
    resp = call("POST", f"{sim.url}/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
                raw=raw)
    assert assert_envelope(resp, 400, "invalid_request")
    assert not sim.predictions


def test_unknown_model_is_404(sim):
    message = assert_envelope(create(sim.url, "xyz", {"prompt": "x"}), 404, "model_not_found")
    assert message.startswith("model black-forest-labs/xyz not found (request id: ")


def test_input_validation_is_422_problem_details(sim):
    resp = create(sim.url, "flux-schnell", {"seed": 1})
    assert resp.status == 422
    assert resp.json() == {"title": "Input validation failed",
                           "detail": "input.prompt: prompt is required", "status": 422}
    problems = create(sim.url, "flux-1.1-pro-ultra", {"prompt": " ", "output_format": "webp",
                                                      "aspect_ratio": "custom"}).json()["detail"]
    assert len(problems.split("\n")) == 3
    assert "output_format" in problems and "aspect_ratio" in problems
    assert create(sim.url, "flux-schnell", {"prompt": "x", "num_outputs": 5}).status == 422
    assert create(sim.url, "flux-2-dev", {"prompt": "x", "input_images": ["https://a/b"] * 5}
                  ).status == 422
    assert create(sim.url, "flux-dev", {"prompt": "x", "image": "ftp://a/b.png"}).status == 422
    assert not sim.predictions


def test_unknown_id_is_404(sim):
    for resp in (get(sim.url, "nosuchid"), cancel(sim.url, "nosuchid")):
        assert resp.status == 404
        assert resp.json() == {"detail": "Not found.", "status": 404, "title": "Not found"}


def test_unknown_path_is_html_301(sim):
    resp = call("GET", f"{sim.url}/v1/predictions/abc")
    assert resp.status == 301
    assert resp.headers["Content-Type"] == "text/html"
    assert resp.headers["Location"] == "https://www.cometapi.com/"
    assert b"Moved Permanently" in resp.body


# -- lifecycle ---------------------------------------------------------------------------------

def test_lifecycle_states_and_growing_logs(sim):
    sim.run_time = 0.6
    created = create(sim.url, "flux-dev", {"prompt": "steps", "seed": 42,
                                           "num_inference_steps": 6}).json()
    seen = [created] + poll(sim.url, created["id"])
    statuses = [p["status"] for p in seen]
    assert statuses[0] == "starting" and statuses[-1] == "succeeded"
    assert "processing" in statuses
    assert statuses == sorted(statuses, key=["starting", "processing", "succeeded"].index)
    logs = [p["logs"] for p in seen]
    assert all(later.startswith(earlier) for earlier, later in pairwise(logs))
    partial = [p["logs"] for p in seen if p["status"] == "processing"]
    assert all(log.startswith("Using seed: 42\n") for log in partial)
    assert any(0 < log.count("/6 [") < 6 for log in partial)  # caught mid-run
    done = seen[-1]
    assert done["logs"].startswith("Using seed: 42\n")
    assert re.search(r"100%\|█{10}\| 6/6 \[", done["logs"])
    assert done["started_at"] and done["completed_at"]
    assert done["completed_at"] >= done["started_at"] >= done["created_at"]
    assert done["metrics"]["predict_time"] == pytest.approx(0.6, abs=0.05)
    assert done["metrics"]["total_time"] >= done["metrics"]["predict_time"]


@pytest.mark.parametrize("word, status", [("[sim:fail]", "failed"), ("[sim:abort]", "aborted")])
def test_magic_failures_are_http_200(sim, word, status):
    done = run(sim.url, "flux-pro", {"prompt": f"break {word}"})
    assert done["status"] == status
    assert done["output"] is None
    assert done["error"]


def test_cancel(sim):
    pid = create(sim.url, "flux-dev", {"prompt": "long [sim:slow]"}).json()["id"]
    time.sleep(0.1)
    assert get(sim.url, pid).json()["status"] == "processing"
    canceled = cancel(sim.url, pid)
    assert canceled.status == 200
    pred = canceled.json()
    assert pred["status"] == "canceled" and pred["output"] is None
    assert pred["completed_at"]
    assert get(sim.url, pid).json() == pred
    assert cancel(sim.url, pid).json() == pred  # terminal: unchanged
    done = run(sim.url, "flux-dev", {"prompt": "quick"})
    assert cancel(sim.url, done["id"]).json()["status"] == "succeeded"


def test_cancel_unsupported_answers_like_bad_path(sim):
    sim.cancel_supported = False
    pid = create(sim.url, "flux-dev", {"prompt": "x"}).json()["id"]
    resp = cancel(sim.url, pid)
    assert resp.status == 301 and resp.headers["Content-Type"] == "text/html"
    assert poll(sim.url, pid)[-1]["status"] == "succeeded"


def test_outputs_expire():
    with Sim(expire=0.3, start_delay=0.05, run_time=0.2) as s:
        done = run(s.url, "flux-1.1-pro", {"prompt": "fleeting"})
        assert call("GET", done["output"], key=None).status == 200
        time.sleep(0.35)
        assert call("GET", done["output"], key=None).status == 404
        pred = get(s.url, done["id"]).json()
        assert pred["data_removed"] is True and pred["output"] is None


def test_state_file_survives_restart(tmp_path):
    state = tmp_path / "state.json"
    with Sim(state_file=state, start_delay=0.05, run_time=0.2) as first:
        done = run(first.url, "flux-schnell", {"prompt": "keep me", "seed": 7})
    with Sim(state_file=state) as second:
        again = get(second.url, done["id"]).json()
        assert again["status"] == "succeeded" and again["input"] == done["input"]
        assert again["created_at"] == done["created_at"]
        resp = call("GET", again["output"][0], key=None)
        assert resp.status == 200 and Image.open(io.BytesIO(resp.body)).format == "WEBP"


# -- faults ------------------------------------------------------------------------------------

def test_fault_429_with_retry_after(sim):
    pid = create(sim.url, "flux-schnell", {"prompt": "x"}).json()["id"]
    sim.add_fault("get", "429", retry_after=2)
    resp = get(sim.url, pid)
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    assert resp.json() == {"detail": "Request was throttled. Expected available in 2 seconds.",
                           "status": 429}
    assert get(sim.url, pid).status == 200  # times=1: consumed


@pytest.mark.parametrize("kind, status, code", [
    ("500", 500, "upstream_error"), ("502", 502, "upstream_error"),
    ("503", 503, "upstream_error"), ("504", 504, "upstream_error"),
    ("500-invalid", 500, "invalid_request"),
])
def test_fault_gateway_errors_use_envelope(sim, kind, status, code):
    sim.add_fault("create", kind)
    assert_envelope(create(sim.url, "flux-schnell", {"prompt": "x"}), status, code)
    assert not sim.predictions


def test_fault_524_and_301_are_html(sim):
    sim.add_fault("get", "524")
    sim.add_fault("get", "301")
    first, second = get(sim.url, "anything"), get(sim.url, "anything")
    assert first.status == 524 and first.headers["Content-Type"] == "text/html"
    assert b"Error code 524" in first.body and b"A timeout occurred" in first.body
    assert second.status == 301 and second.headers["Location"] == "https://www.cometapi.com/"


@pytest.mark.parametrize("kind", ["429", "500", "524", "301", "malformed"])
def test_faulted_create_creates_nothing(sim, kind):
    sim.add_fault("create", kind)
    assert create(sim.url, "flux-schnell", {"prompt": "x"}).status != 201
    assert not sim.predictions


def test_fault_malformed_json(sim):
    sim.add_fault("get", "malformed")
    resp = get(sim.url, "anything")
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        resp.json()


def test_fault_status_replaced(sim):
    pid = create(sim.url, "flux-schnell", {"prompt": "x"}).json()["id"]
    sim.add_fault("get", "status:queued")
    weird = get(sim.url, pid).json()
    assert weird["status"] == "queued" and weird["id"] == pid
    assert poll(sim.url, pid)[-1]["status"] == "succeeded"


def test_fault_hang_does_not_block_others(sim):
    pid = create(sim.url, "flux-schnell", {"prompt": "x"}).json()["id"]
    sim.add_fault("get", "hang", delay=0.5)
    slow = {}

    def slow_get():
        started = time.monotonic()
        slow["resp"] = get(sim.url, pid)
        slow["took"] = time.monotonic() - started

    worker = threading.Thread(target=slow_get)
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert get(sim.url, pid).status == 200
    assert time.monotonic() - started < 0.3
    worker.join(3)
    assert slow["resp"].status == 200 and slow["took"] >= 0.5


def test_fault_hang_on_create_still_creates():
    s = Sim(start_delay=0.05, run_time=0.2).start()
    s.add_fault("create", "hang", delay=30)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        create(s.url, "flux-schnell", {"prompt": "accepted"}, timeout=0.3)
    assert len(s.predictions) == 1  # accepted and (maybe) billed, though no answer came
    started = time.monotonic()
    s.stop()  # must not wait for the hanging answer
    assert time.monotonic() - started < 2


def test_fault_drop(sim):
    sim.add_fault("create", "drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        create(sim.url, "flux-schnell", {"prompt": "lost answer"})
    [(pid, _)] = sim.predictions.items()
    sim.add_fault("get", "drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        get(sim.url, pid)
    assert get(sim.url, pid).status == 200


def test_fault_times_and_any_route(sim):
    sim.add_fault("any", "503", times=2)
    assert get(sim.url, "x").status == 503
    assert call("GET", f"{sim.url}/files/x/0.png", key=None).status == 503
    assert get(sim.url, "x").status == 404
    sim.add_fault("get", "502", times=-1)
    assert [get(sim.url, "x").status for _ in range(3)] == [502] * 3
    sim.clear_faults()
    assert get(sim.url, "x").status == 404
    with pytest.raises(ValueError):
        sim.add_fault("get", "418")


# -- request log and control routes ------------------------------------------------------------

def test_request_log_records_bodies_and_headers(sim):
    create(sim.url, "flux-schnell", {"prompt": "logged"}, key="secret-key")
    call("GET", f"{sim.url}/replicate/v1/predictions/abc?x=1", key=None)
    first, second = sim.requests
    assert (first["method"], first["path"]) == (
        "POST", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions")
    assert first["headers"]["authorization"] == "Bearer secret-key"
    assert first["json"] == {"input": {"prompt": "logged"}}
    assert (second["query"], second["json"]) == ("x=1", None)
    assert "authorization" not in second["headers"]
    over_http = call("GET", f"{sim.url}/_sim/requests", key=None).json()
    assert over_http == [first, second]  # the control request itself is not logged
    sim.clear_requests()
    assert sim.requests == []


def test_control_routes(sim):
    base = f"{sim.url}/_sim"
    assert call("POST", f"{base}/faults", {"route": "get", "kind": "429", "retry_after": 1}
                ).status == 200
    assert get(sim.url, "x").status == 429
    call("POST", f"{base}/faults", {"route": "get", "kind": "504", "times": -1})
    assert call("DELETE", f"{base}/faults").status == 200
    assert get(sim.url, "x").status == 404
    assert call("POST", f"{base}/faults", {"route": "nowhere", "kind": "429"}).status == 400
    assert call("POST", f"{base}/config", {"output_style": "list", "run_time": 0.05}
                ).status == 200
    assert isinstance(run(sim.url, "flux-pro", {"prompt": "x"})["output"], list)
    assert call("POST", f"{base}/config", {"output_style": "weird"}).status == 400
    assert call("DELETE", f"{base}/requests").status == 200
    assert sim.requests == []


# -- the CLI -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serves_a_full_flow():
    proc = subprocess.Popen(
        [sys.executable, "-m", "comet.sim", "--port", str(_free_port()), "--start-delay", "0.05",
         "--run-time", "0.2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=10), "the stand-in did not start"
        line = proc.stdout.readline()
        match = re.fullmatch(r"CometAPI stand-in listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        done = run(match[1], "flux-kontext-pro", {"prompt": "from the CLI", "output_format": "jpg"})
        assert done["status"] == "succeeded"
        resp = call("GET", done["output"], key=None)
        assert Image.open(io.BytesIO(resp.body)).format == "JPEG"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    assert proc.stdout.read() == "" and proc.stderr.read() == ""


def test_cli_help_describes_every_option_and_fault():
    shown = subprocess.run([sys.executable, "-m", "comet.sim", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=30, check=True).stdout
    described = {}  # option -> its description ("--expire SECONDS  how long ..." over one or more lines)
    for entry in re.split(r"\n(?=  -)", shown.split("options:\n", 1)[1].split("\n\n", 1)[0]):
        head, *more = entry.strip().split("\n")
        described[head.split()[0].rstrip(",")] = " ".join(
            re.split(r"\s{2,}", head, maxsplit=1)[1:] + [line.strip() for line in more])
    options = {"--host", "--port", "--key", "--expire", "--start-delay", "--run-time", "--no-cancel",
               "--output-style", "--state", "--fault"}
    assert options <= set(described)
    for option in options:
        assert len(described[option].split()) >= 4, f"{option} is not described: {described[option]!r}"
    assert "without it any non-empty Bearer key is accepted" in described["--key"]
    faults = shown.split("fault kinds", 1)[1]
    for kind in FAULT_KINDS:  # every kind, each with what it does
        assert re.search(rf"^  (?:[\w-]+, )*{re.escape(kind)}(?:, [\w-]+)* +\w", faults, re.MULTILINE), kind
    assert re.search(r"^  status:VALUE +\w", faults, re.MULTILINE)
    assert all(route in faults for route in FAULT_ROUTES)
