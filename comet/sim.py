"""A local stand-in for CometAPI's Replicate-compatible prediction API.

It speaks the contract in shared/reference/api-contract.md, rough edges included (HTML 301 for
wrong paths, two error envelopes, foreign ``urls``, expiring outputs, ``aborted``), so the app's
demo mode and the tests exercise the same behaviour a real account would show. It deliberately
knows the models only loosely: it is a second opinion on the API, not a copy of our catalog.

Run it standalone with ``python -m comet.sim --port 8765``.

Stand-ins given one state file (``--state``; the app's demo mode uses one per data folder) are
one stand-in to their clients: each reads what the others wrote before answering, and writes
take turns under a file lock, so any of them answers for a prediction another one created.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import random
import re
import secrets
import signal
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont

try:  # POSIX: stand-ins sharing a state file take turns to change it
    import fcntl
except ImportError:  # Windows: no lock across processes; each write still replaces the file whole
    fcntl = None

OWNER = "black-forest-labs"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
OUTPUT_STYLES = ("model", "string", "list", "data_uri")
FAULT_ROUTES = ("create", "get", "cancel", "file", "any")
FAULT_KINDS = ("429", "500", "502", "503", "504", "500-invalid", "524", "301",
               "hang", "drop", "malformed")  # plus "status:<value>"

_ERRORS = {
    "failed": "Prediction failed: simulated model error",
    "aborted": "Prediction aborted: simulated platform interruption",
}
_MAX_LOG_LINES = 50
_LONG_SIDE, _MIN_SIDE = 512, 64
_CONTENT_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}
_PIL_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}
_IMAGE_PREFIXES = ("https://", "http://", "data:image/")


@dataclass(frozen=True)
class _Model:
    list_output: bool
    # Image input field -> max list length, or None for a single-URI field.
    image_fields: dict[str, int | None]
    formats: tuple[str, ...]
    default_format: str
    ratios: tuple[str, ...]
    default_ratio: str = "1:1"


_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
_PRO_RATIOS = ("custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
_ULTRA_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
_KONTEXT_RATIOS = ("match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3",
                   "4:5", "5:4", "21:9", "9:21", "2:1", "1:2")
_ALL_FORMATS = ("webp", "jpg", "png")
_KONTEXT = _Model(False, {"input_image": None, "input_image_2": None, "input_image_3": None,
                          "input_image_4": None},
                  ("jpg", "png"), "png", _KONTEXT_RATIOS, "match_input_image")

MODELS: dict[str, _Model] = {
    "flux-schnell": _Model(True, {}, _ALL_FORMATS, "webp", _RATIOS),
    "flux-dev": _Model(True, {"image": None}, _ALL_FORMATS, "webp", _RATIOS),
    "flux-pro": _Model(False, {"image_prompt": None}, _ALL_FORMATS, "webp", _PRO_RATIOS),
    "flux-1.1-pro": _Model(False, {"image_prompt": None}, _ALL_FORMATS, "webp", _PRO_RATIOS),
    "flux-1.1-pro-ultra": _Model(False, {"image_prompt": None}, ("jpg", "png"), "jpg",
                                 _ULTRA_RATIOS),
    "flux-kontext-pro": _KONTEXT,
    "flux-kontext-max": _KONTEXT,
    "flux-2-pro": _Model(False, {"input_images": 8}, _ALL_FORMATS, "webp",
                         ("match_input_image",) + _PRO_RATIOS),
    "flux-2-dev": _Model(False, {"input_images": 4}, _ALL_FORMATS, "webp",
                         ("match_input_image",) + _PRO_RATIOS),
    "flux-2-flex": _Model(False, {"input_images": 10}, _ALL_FORMATS, "webp",
                          ("match_input_image",) + _PRO_RATIOS),
}

# What nginx in front of CometAPI answers for a path it does not know.
_MOVED_HTML = (
    "<html>\r\n<head><title>301 Moved Permanently</title></head>\r\n<body>\r\n"
    "<center><h1>301 Moved Permanently</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_CLOUDFLARE_524_HTML = (
    "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n<title>api.cometapi.com | 524: A timeout "
    "occurred</title>\n</head>\n<body>\n<div id=\"cf-error-details\">\n<h1><span>A timeout "
    "occurred</span> <span>Error code 524</span></h1>\n<p>The origin web server timed out "
    "responding to this request.</p>\n<p>Cloudflare Ray ID: <strong>8f1c2d3e4a5b6c7d</strong>"
    "</p>\n</div>\n</body>\n</html>\n"
)
_GATEWAY_ERRORS = {
    "500": (500, "Internal server error", "upstream_error"),
    "502": (502, "Bad gateway: the upstream provider returned an invalid response",
            "upstream_error"),
    "503": (503, "Service temporarily unavailable: the upstream provider is overloaded",
            "upstream_error"),
    "504": (504, "Gateway timeout: the upstream provider did not answer in time",
            "upstream_error"),
    "500-invalid": (500, "Invalid request: the upstream provider rejected the request",
                    "invalid_request"),
}

_CREATE_PATH = re.compile(r"/replicate/v1/models/([^/]+)/([^/]+)/predictions/?")
_GET_PATH = re.compile(r"/replicate/v1/predictions/([^/]+)/?")
_CANCEL_PATH = re.compile(r"/replicate/v1/predictions/([^/]+)/cancel/?")
_FILE_PATH = re.compile(r"/files/([^/]+)/(\d+)\.([a-z]+)")


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    route: str
    kind: str
    times: int = 1
    retry_after: float | None = None
    delay: float | None = None

    def __post_init__(self) -> None:
        if self.route not in FAULT_ROUTES:
            raise ValueError(f"unknown fault route {self.route!r}; use one of {FAULT_ROUTES}")
        if self.kind not in FAULT_KINDS and not (
                self.kind.startswith("status:") and len(self.kind) > len("status:")):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if not _is_int(self.times) or not (self.times == -1 or self.times >= 1):
            raise ValueError("times must be -1 (until cleared) or a positive integer")
        for name in ("retry_after", "delay"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number")

    @property
    def served(self) -> bool:
        """True when the request is still served for real and only its answer is spoiled."""
        return self.kind in ("hang", "drop") or self.kind.startswith("status:")


def _json_reply(status: int, obj: object, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(obj).encode(), "application/json", headers or {})


def _envelope(status: int, message: str, rid: str, code: str = "") -> _Reply:
    return _json_reply(status, {"error": {"message": f"{message} (request id: {rid})",
                                          "type": "comet_api_error", "param": "", "code": code}})


def _moved() -> _Reply:
    return _Reply(301, _MOVED_HTML.encode(), "text/html",
                  {"Location": "https://www.cometapi.com/"})


def _not_found() -> _Reply:
    return _json_reply(404, {"detail": "Not found.", "status": 404, "title": "Not found"})


def _random_id(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _is_int(value: object, low: int | None = None, high: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (low is None or value >= low) and (high is None or value <= high))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_image_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_IMAGE_PREFIXES)


def _validate(model: _Model, inp: dict) -> list[str]:
    """Light, schema-like checks; unknown keys pass, as upstream lets them."""
    problems = []
    if "prompt" not in inp:
        problems.append("input.prompt: prompt is required")
    elif not isinstance(inp["prompt"], str) or not inp["prompt"].strip():
        problems.append("input.prompt: prompt must be a non-empty string")
    # Optional fields sent as null count as absent.
    present = {k: v for k, v in inp.items() if v is not None}
    if model.list_output and "num_outputs" in present and not _is_int(present["num_outputs"], 1, 4):
        problems.append("input.num_outputs: must be an integer between 1 and 4")
    for name, choices in (("output_format", model.formats), ("aspect_ratio", model.ratios)):
        if name in present and present[name] not in choices:
            problems.append(f"input.{name}: {name} must be one of: {', '.join(choices)}")
    if "seed" in present and not _is_int(present["seed"]):
        problems.append("input.seed: must be an integer")
    if present.get("aspect_ratio") == "custom":
        problems += [f"input.{name}: must be a positive integer" for name in ("width", "height")
                     if name in present and not _is_int(present[name], 1)]
    for name, limit in model.image_fields.items():
        if name not in present:
            continue
        value = present[name]
        if limit is None and not _is_image_ref(value):
            problems.append(f"input.{name}: must be an http(s) URL or a data:image/ URI")
        elif limit is not None and not (isinstance(value, list) and all(map(_is_image_ref, value))):
            problems.append(f"input.{name}: must be a list of http(s) URLs or data:image/ URIs")
        elif limit is not None and len(value) > limit:
            problems.append(f"input.{name}: at most {limit} images allowed, got {len(value)}")
    return problems


def _image_size(ratio: str, width: object, height: object) -> tuple[int, int]:
    if ratio == "custom":
        rw = width if _is_int(width, 1) else 1024
        rh = height if _is_int(height, 1) else 1024
    elif ratio == "match_input_image":
        rw = rh = 1  # input images are never fetched, so there is nothing to match
    else:
        rw, rh = (int(part) for part in ratio.split(":"))
    short = max(_MIN_SIDE, round(_LONG_SIDE * min(rw, rh) / max(rw, rh)))
    return (_LONG_SIDE, short) if rw >= rh else (short, _LONG_SIDE)


def _render(prompt: str, seed: int, index: int, fmt: str, size: tuple[int, int],
            quality: int) -> bytes:
    """A small picture that is a pure function of (prompt, seed, index): gradient, shapes, text."""
    digest = hashlib.sha256(f"{prompt}\0{seed}\0{index}".encode()).digest()
    w, h = size
    mask = Image.linear_gradient("L").rotate(digest[6] % 4 * 90).resize((w, h))
    img = Image.composite(Image.new("RGB", size, tuple(digest[0:3])),
                          Image.new("RGB", size, tuple(digest[3:6])), mask)
    draw = ImageDraw.Draw(img)
    for i in range(3):
        x, y, r, *colour = digest[8 + 6 * i: 14 + 6 * i]
        x, y, r = x * w // 256, y * h // 256, max(8, r * min(w, h) // 512)
        shape = draw.ellipse if i % 2 == 0 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=tuple(colour))
    font = ImageFont.load_default(size=max(10, min(w, h) // 20))
    left, top, right, bottom = draw.textbbox((8, 8), prompt[:40], font=font)
    draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((8, 8), prompt[:40], fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    options = {} if fmt == "png" else {"quality": quality}
    img.save(buf, format=_PIL_FORMATS[fmt], **options)
    return buf.getvalue()


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _progress_line(step: int, steps: int, duration: float) -> str:
    """One tqdm line; a pure function of the step so that logs only ever grow."""
    per_step = duration / steps
    bar = ("█" * (10 * step // steps)).ljust(10)
    if per_step <= 0:
        rate = "   ?it/s"
    elif per_step <= 1:
        rate = f"{1 / per_step:5.2f}it/s"
    else:
        rate = f"{per_step:5.2f}s/it"
    return (f"{100 * step // steps:3d}%|{bar}| {step}/{steps} "
            f"[{_clock(step * per_step)}<{_clock((steps - step) * per_step)}, {rate}]\n")


class Sim:
    """The stand-in server. ``start()`` serves in a daemon thread; ``stop()`` ends it.

    ``run_time``, ``start_delay`` and ``output_style`` are read when a prediction is created
    (a running prediction keeps its schedule); ``expire``, ``cancel_supported``, ``key`` and
    ``create_delay`` (how long every create takes to answer, as a real one takes seconds) are
    read on every request. ``create_stats()`` counts the creates being answered at once, for
    tests and benchmarks of bounded concurrency (measured here, at the server).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, key: str | None = None,
                 expire: float = 3600.0, start_delay: float = 0.5, run_time: float = 3.0,
                 cancel_supported: bool = True, output_style: str = "model",
                 state_file: str | os.PathLike | None = None, create_delay: float = 0.0) -> None:
        self.host, self.port, self.key = host, port, key
        self.expire, self.start_delay, self.run_time = expire, start_delay, run_time
        self.create_delay = create_delay
        self._creating = self._creating_peak = 0  # creates being answered now, and the most at once
        self.cancel_supported, self.output_style = cancel_supported, output_style
        self.state_file = state_file
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._predictions: dict[str, dict] = {}
        self._files: dict[tuple[str, int], bytes] = {}
        self._faults: list[_Fault] = []
        self._requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state_seen: tuple[int, int, int] | None = None  # the state file as last read or written
        self._sync_state(strict=True)  # an unreadable file stops the start, as it always did

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sim:
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() fast.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="comet-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes "hang" faults, which then drop their connection
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Sim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- test control ------------------------------------------------------------------------

    def add_fault(self, route: str, kind: str, times: int = 1, retry_after: float | None = None,
                  delay: float | None = None) -> None:
        """Spoil the next ``times`` requests to ``route`` (-1: until cleared)."""
        fault = _Fault(route, kind, times, retry_after, delay)
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def configure(self, **settings: object) -> None:
        """Validated runtime change of run_time, start_delay, expire, create_delay,
        output_style, cancel_supported (what ``POST /_sim/config`` calls)."""
        for name, value in settings.items():
            if name in ("run_time", "start_delay", "expire", "create_delay"):
                ok = _is_number(value) and value >= 0
            elif name == "output_style":
                ok = value in OUTPUT_STYLES
            elif name == "cancel_supported":
                ok = isinstance(value, bool)
            else:
                raise ValueError(f"unknown setting {name!r}")
            if not ok:
                raise ValueError(f"invalid value for {name}: {value!r}")
        for name, value in settings.items():
            setattr(self, name, value)

    def create_stats(self, reset: bool = False) -> dict[str, int]:
        """{"in_flight": creates being answered now, "peak": the most at once since the start
        or the last reset} (``GET /_sim/stats``; ``reset`` starts the peak again from now)."""
        with self._lock:
            stats = {"in_flight": self._creating, "peak": self._creating_peak}
            if reset:
                self._creating_peak = self._creating
            return stats

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def predictions(self) -> dict[str, dict]:
        """Internal records by id (a copy)."""
        with self._lock:
            self._sync_state()
            return copy.deepcopy(self._predictions)

    def get_prediction(self, prediction_id: str) -> dict | None:
        """The public JSON a GET would answer now, or None for an unknown id."""
        with self._lock:
            self._sync_state()
            rec = self._predictions.get(prediction_id)
            return None if rec is None else self._public(rec, time.time())

    # -- request handling --------------------------------------------------------------------

    def _handle(self, method: str, path: str, query: str, headers: dict[str, str],
                body: bytes) -> _Reply | None:
        """Answer one request; None means: close the connection without an answer."""
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        rid = _random_id(20, string.ascii_uppercase + string.digits)
        route, args = self._route(method, path)
        with self._lock:
            self._requests.append({"method": method, "path": path, "query": query,
                                   "headers": headers, "json": _parse_json(body),
                                   "time": time.time()})
        if route != "create":
            return self._answer(route, args, headers, body, rid)
        with self._lock:
            self._creating += 1
            self._creating_peak = max(self._creating_peak, self._creating)
        try:
            if self.create_delay:
                self._stopping.wait(self.create_delay)
            return self._answer(route, args, headers, body, rid)
        finally:
            with self._lock:
                self._creating -= 1

    def _answer(self, route: str, args: tuple[str, ...], headers: dict[str, str], body: bytes,
                rid: str) -> _Reply | None:
        fault = self._take_fault(route)
        if fault and not fault.served:
            reply = self._fault_reply(fault, rid)
        else:
            reply = self._serve(route, args, headers, body, rid)
            if fault:
                reply = self._spoil(fault, reply)
        if reply is not None:
            reply.headers["X-Request-Id"] = rid
        return reply

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, tuple[str, ...]]:
        for name, verb, pattern in (("create", "POST", _CREATE_PATH), ("get", "GET", _GET_PATH),
                                    ("cancel", "POST", _CANCEL_PATH), ("file", "GET", _FILE_PATH)):
            match = pattern.fullmatch(path)
            if match and method == verb:
                return name, match.groups()
        return "other", ()

    def _take_fault(self, route: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.route in (route, "any"):
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _fault_reply(fault: _Fault, rid: str) -> _Reply:
        if fault.kind == "429":
            wait = 1 if fault.retry_after is None else fault.retry_after
            headers = {} if fault.retry_after is None else {"Retry-After": f"{wait:g}"}
            return _json_reply(429, {"detail": f"Request was throttled. Expected available in "
                                               f"{wait:g} seconds.", "status": 429}, headers)
        if fault.kind in _GATEWAY_ERRORS:
            status, message, code = _GATEWAY_ERRORS[fault.kind]
            return _envelope(status, message, rid, code)
        if fault.kind == "524":
            return _Reply(524, _CLOUDFLARE_524_HTML.encode(), "text/html")
        if fault.kind == "301":
            return _moved()
        # "malformed": the connection was cut mid-body by something in between.
        return _Reply(200, b'{"id": "abc", "status": "proc', "application/json")

    def _spoil(self, fault: _Fault, reply: _Reply) -> _Reply | None:
        """Apply a fault to a request that was served: a create has happened all the same."""
        if fault.kind == "drop":
            return None
        if fault.kind == "hang":
            # The answer is late, or lost if the server stops meanwhile.
            stopped = self._stopping.wait(60.0 if fault.delay is None else fault.delay)
            return None if stopped else reply
        if reply.content_type == "application/json":
            obj = json.loads(reply.body)
            if isinstance(obj, dict) and "status" in obj:
                obj["status"] = fault.kind[len("status:"):]
                reply.body = json.dumps(obj).encode()
        return reply

    def _serve(self, route: str, args: tuple[str, ...], headers: dict[str, str], body: bytes,
               rid: str) -> _Reply:
        if route == "file":
            return self._file(*args)
        if route == "other" or (route == "cancel" and not self.cancel_supported):
            return _moved()
        auth = headers.get("authorization")
        if auth is None:
            return _envelope(401, "Missing Authorization header", rid)
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or (self.key is not None and token != self.key):
            return _envelope(401, "Invalid token", rid)
        if route == "create":
            return self._create(*args, body, rid)
        with self._lock:
            self._sync_state()
            rec = self._predictions.get(args[0])
            if rec is None:
                return _not_found()
            now = time.time()
            if route == "cancel" and self._status(rec, now) not in TERMINAL:
                with self._writing():
                    rec = self._predictions.get(args[0], rec)  # the latest shared version
                    if self._status(rec, now) not in TERMINAL:
                        rec["canceled"] = now
            return _json_reply(200, self._public(rec, now))

    def _create(self, owner: str, name: str, body: bytes, rid: str) -> _Reply:
        try:
            data = json.loads(body)
        except ValueError as exc:
            return _envelope(400, f"invalid request body: not valid JSON ({exc})", rid,
                             "invalid_request")
        if not isinstance(data, dict):
            return _envelope(400, "invalid request body: expected a JSON object", rid,
                             "invalid_request")
        if not isinstance(data.get("input"), dict):
            return _envelope(400, "invalid request body: field 'input' must be an object", rid,
                             "invalid_request")
        model = MODELS.get(name) if owner == OWNER else None
        if model is None:
            return _envelope(404, f"model {owner}/{name} not found", rid, "model_not_found")
        inp = data["input"]
        problems = _validate(model, inp)
        if problems:
            return _json_reply(422, {"title": "Input validation failed",
                                     "detail": "\n".join(problems), "status": 422})
        rec = self._new_record(name, model, inp)
        with self._lock:
            with self._writing():
                self._predictions[rec["id"]] = rec
            return _json_reply(201, self._public(rec, rec["created"]))

    def _new_record(self, name: str, model: _Model, inp: dict) -> dict:
        prompt = inp["prompt"]
        steps = next((inp[k] for k in ("num_inference_steps", "steps") if _is_int(inp.get(k), 1)),
                     4 if name == "flux-schnell" else 28)
        outputs = (inp.get("num_outputs") or 1) if model.list_output else 1
        run_time = self.run_time * (60 if "[sim:slow]" in prompt else 1)
        created = time.time()
        quality = inp.get("output_quality")
        return {
            "id": _random_id(26, string.ascii_lowercase + string.digits),
            "model": f"{OWNER}/{name}",
            "input": inp,
            "seed": inp["seed"] if _is_int(inp.get("seed")) else random.randrange(2**32),
            "steps": steps,
            "outputs": 1 if self.output_style == "string" else outputs,
            "style": self.output_style,
            "format": inp.get("output_format") or model.default_format,
            "size": _image_size(inp.get("aspect_ratio") or model.default_ratio,
                                inp.get("width"), inp.get("height")),
            "quality": min(100, max(0, quality)) if _is_int(quality) else 80,
            "outcome": ("failed" if "[sim:fail]" in prompt else
                        "aborted" if "[sim:abort]" in prompt else "succeeded"),
            "stream": _random_id(40, string.ascii_letters + string.digits),
            "created": created,
            "started": created + self.start_delay,
            "completed": created + self.start_delay + run_time,
            "canceled": None,
        }

    # -- the prediction as seen from outside (all under the lock) ----------------------------

    @staticmethod
    def _status(rec: dict, now: float) -> str:
        if rec["canceled"] is not None:
            return "canceled"
        if now < rec["started"]:
            return "starting"
        if now < rec["completed"]:
            return "processing"
        return rec["outcome"]

    def _removed(self, rec: dict, status: str, now: float) -> bool:
        ended = rec["canceled"] if status == "canceled" else rec["completed"]
        return status in TERMINAL and now >= ended + self.expire

    def _public(self, rec: dict, now: float) -> dict:
        status = self._status(rec, now)
        ended = rec["canceled"] if status == "canceled" else rec["completed"]
        terminal = status in TERMINAL
        removed = self._removed(rec, status, now)
        pid = rec["id"]
        metrics: dict = {}
        if terminal:
            metrics = {"predict_time": round(max(0.0, ended - rec["started"]), 3),
                       "total_time": round(ended - rec["created"], 3)}
            if status == "succeeded":
                metrics["image_count"] = rec["outputs"]
        return {
            "id": pid,
            "model": rec["model"],
            "version": "hidden",
            "input": rec["input"],
            "logs": self._logs(rec, status, min(now, ended)),
            "output": self._output(rec) if status == "succeeded" and not removed else None,
            "data_removed": removed,
            "error": _ERRORS.get(status),
            "source": "api",
            "status": status,
            "created_at": _iso(rec["created"]),
            "started_at": _iso(rec["started"]) if now >= rec["started"] and (
                rec["canceled"] is None or rec["canceled"] >= rec["started"]) else None,
            "completed_at": _iso(ended) if terminal else None,
            "urls": {
                "get": f"https://api.replicate.com/v1/predictions/{pid}",
                "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
                "stream": f"https://stream.replicate.com/v1/files/{rec['stream']}",
                "web": f"https://replicate.com/p/{pid}",
            },
            "metrics": metrics,
        }

    @staticmethod
    def _logs(rec: dict, status: str, until: float) -> str:
        if until < rec["started"]:
            return ""
        duration = rec["completed"] - rec["started"]
        done = 1.0 if duration <= 0 else min(1.0, (until - rec["started"]) / duration)
        steps = rec["steps"]
        shown = min(steps, _MAX_LOG_LINES)
        lines = [f"Using seed: {rec['seed']}\n"]
        lines += [_progress_line(math.ceil(i * steps / shown), steps, duration)
                  for i in range(1, math.floor(done * shown) + 1)]
        if status == "succeeded":
            lines.append(f"Generated {rec['outputs']} image(s) in {duration:.2f}s\n")
        elif status in _ERRORS:
            lines.append(_ERRORS[status] + "\n")
        return "".join(lines)

    def _output(self, rec: dict) -> str | list[str]:
        fmt = rec["format"]
        if rec["style"] == "data_uri":
            items = [f"data:{_CONTENT_TYPES[fmt]};base64,"
                     + base64.b64encode(self._image(rec, i)).decode()
                     for i in range(rec["outputs"])]
        else:
            items = [f"{self.url}/files/{rec['id']}/{i}.{fmt}" for i in range(rec["outputs"])]
        as_list = rec["style"] == "list" or (rec["style"] != "string"
                                             and MODELS[rec["model"].split("/")[1]].list_output)
        return items if as_list else items[0]

    def _image(self, rec: dict, index: int) -> bytes:
        key = (rec["id"], index)
        if key not in self._files:
            self._files[key] = _render(rec["input"]["prompt"], rec["seed"], index, rec["format"],
                                       tuple(rec["size"]), rec["quality"])
        return self._files[key]

    def _file(self, pid: str, index: str, ext: str) -> _Reply:
        with self._lock:
            self._sync_state()
            rec = self._predictions.get(pid)
            now = time.time()
            if rec is None or ext != rec["format"] or int(index) >= rec["outputs"]:
                return _Reply(404, b"Not found", "text/plain")
            status = self._status(rec, now)
            if status != "succeeded" or self._removed(rec, status, now):
                return _Reply(404, b"Not found", "text/plain")
            return _Reply(200, self._image(rec, int(index)), _CONTENT_TYPES[ext])

    # -- the state file, shared by every stand-in given it (all under self._lock) ----------------

    def _sync_state(self, strict: bool = False) -> None:
        """Take up what another stand-in wrote to the state file since this one last read or
        wrote it: one stat per request, a read only when the file changed. The file is the
        truth (every change is written to it), memory a copy of it. A file spoiled while
        serving (by hand: writes replace it whole) leaves the copy as it was."""
        if not self.state_file:
            return
        try:
            seen = _file_signature(self.state_file)
            if seen == self._state_seen:
                return
            with open(self.state_file, encoding="utf-8") as fh:
                predictions = json.load(fh)["predictions"]
            if not isinstance(predictions, dict):
                raise ValueError(f"{self.state_file} holds no predictions")
        except FileNotFoundError:  # nothing saved yet
            return
        except (ValueError, KeyError, TypeError):
            if strict:
                raise
            return
        self._predictions, self._state_seen = predictions, seen

    @contextlib.contextmanager
    def _writing(self):
        """A change of the predictions: made on the latest state and saved before any other
        stand-in sharing the file may change it (an exclusive lock on a file beside it), so
        none overwrites another's prediction or cancel."""
        if not self.state_file:
            yield
            return
        with open(f"{self.state_file}.lock", "a") as lock:  # closing it releases the lock
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            self._sync_state()
            yield
            self._save()

    def _save(self) -> None:
        tmp = f"{self.state_file}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"predictions": self._predictions}, fh)
        os.replace(tmp, self.state_file)  # atomic: a crash never leaves half a file, a reader never reads one
        self._state_seen = _file_signature(self.state_file)  # our own write needs no reading back

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        try:
            if (method, path) == ("POST", "/_sim/faults"):
                self.add_fault(**_control_json(body))
            elif (method, path) == ("DELETE", "/_sim/faults"):
                self.clear_faults()
            elif (method, path) == ("GET", "/_sim/requests"):
                return _json_reply(200, self.requests)
            elif (method, path) == ("DELETE", "/_sim/requests"):
                self.clear_requests()
            elif (method, path) == ("GET", "/_sim/stats"):
                return _json_reply(200, self.create_stats())
            elif (method, path) == ("POST", "/_sim/config"):
                self.configure(**_control_json(body))
            else:
                return _json_reply(404, {"detail": f"no control route {method} {path}"})
        except (TypeError, ValueError) as exc:
            return _json_reply(400, {"detail": str(exc)})
        return _json_reply(200, {"ok": True})


def _file_signature(path: str | os.PathLike) -> tuple[int, int, int]:
    """Changes whenever the file is replaced (a new inode) or rewritten."""
    found = os.stat(path)
    return found.st_ino, found.st_size, found.st_mtime_ns


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _control_json(body: bytes) -> dict:
    data = _parse_json(body)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging request must never keep the process alive

    def __init__(self, address: tuple[str, int], sim: Sim) -> None:
        super().__init__(address, _Handler)
        self.sim = sim


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CometAPI-stand-in"
    # Headers and body go out in two writes: with Nagle on, a kept-alive answer waits ~40 ms
    # for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        """Quiet: the CLI prints one line and nothing else."""

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
            self.close_connection = True  # cannot tell where the next request would start
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.sim._handle(self.command, split.path, split.query, headers, body)
        if reply is None:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


def _fault_spec(spec: str) -> dict:
    """ROUTE:KIND[:TIMES[:RETRY_AFTER]]; KIND may itself be status:<value>."""
    parts = spec.split(":")
    if len(parts) > 2 and parts[1] == "status":
        parts[1:3] = [f"status:{parts[2]}"]
    if not 2 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError(f"expected ROUTE:KIND[:TIMES[:RETRY_AFTER]], got {spec!r}")
    try:
        times = int(parts[2]) if len(parts) > 2 else 1
        retry_after = float(parts[3]) if len(parts) > 3 else None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad number in {spec!r}") from exc
    return {"route": parts[0], "kind": parts[1], "times": times, "retry_after": retry_after}


def main(argv: list[str] | None = None) -> int:
    # What each fault kind does, for --help (FAULT_KINDS are the kinds themselves).
    kinds = [
        ("429", "throttled: JSON 429, with Retry-After only when RETRY_AFTER is given"),
        ("500, 502, 503, 504", "the JSON error envelope with that status"),
        ("500-invalid", "the JSON error envelope, status 500, code invalid_request"),
        ("524", "Cloudflare's HTML timeout page"),
        ("301", "nginx's HTML 301 page (what a wrong base URL gets)"),
        ("hang", "served (a create still creates), answered 60 s late (never if the server stops)"),
        ("drop", "served, then the connection is closed without an answer"),
        ("malformed", "a JSON body cut off mid-way, status 200"),
        ("status:VALUE", "served, with the answer's status field set to VALUE"),
    ]
    epilog = "\n".join([
        "fault kinds (--fault ROUTE:KIND[:TIMES[:RETRY_AFTER]]):",
        *(f"  {kind:<19} {what}" for kind, what in kinds),
        f"ROUTE: one of {', '.join(FAULT_ROUTES)} (any: every route)",
        "TIMES: how many requests get the fault (default 1, -1: until cleared); RETRY_AFTER: seconds",
        "",
        "A prompt containing [sim:fail] or [sim:abort] ends failed or aborted; [sim:slow] runs 60 x",
        "--run-time.",
        "example: python -m comet.sim --port 8765 --fault create:429:2:1.5 --fault get:status:weird",
    ])
    parser = argparse.ArgumentParser(prog="python -m comet.sim", description=__doc__.splitlines()[0],
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on, 0 for any free one "
                        "(default: %(default)s)")
    parser.add_argument("--key", help="the only API key accepted; without it any non-empty Bearer key "
                        "is accepted (a missing one is still refused with 401)")
    parser.add_argument("--expire", type=float, default=3600.0, metavar="SECONDS",
                        help="how long output files can be downloaded after a run ends; later they "
                        "answer 404 and the prediction lists no outputs (default: %(default)s)")
    parser.add_argument("--start-delay", type=float, default=0.5, metavar="SECONDS",
                        help="time a new prediction stays 'starting' before it is 'processing' "
                        "(default: %(default)s)")
    parser.add_argument("--run-time", type=float, default=3.0, metavar="SECONDS",
                        help="time a prediction stays 'processing' before it ends (default: %(default)s)")
    parser.add_argument("--create-delay", type=float, default=0.0, metavar="SECONDS",
                        help="time every create takes to answer (default: %(default)s); GET /_sim/stats "
                        "tells the most creates answered at once")
    parser.add_argument("--no-cancel", action="store_true",
                        help="answer cancel like an unknown path (HTML 301), as servers without it do")
    parser.add_argument("--output-style", choices=OUTPUT_STYLES, default="model",
                        help="shape of a success's output: as each model answers (model), always a "
                        "string, always a list, or inline data: URIs (default: %(default)s)")
    parser.add_argument("--state", metavar="FILE",
                        help="JSON file that keeps predictions across restarts (default: memory only)")
    parser.add_argument("--fault", type=_fault_spec, action="append", default=[],
                        metavar="ROUTE:KIND[:TIMES[:RETRY_AFTER]]",
                        help="spoil requests to ROUTE with KIND (see below); repeatable")
    args = parser.parse_args(argv)
    sim = Sim(host=args.host, port=args.port, key=args.key, expire=args.expire,
              start_delay=args.start_delay, run_time=args.run_time,
              cancel_supported=not args.no_cancel, output_style=args.output_style,
              state_file=args.state, create_delay=args.create_delay)
    for fault in args.fault:
        try:
            sim.add_fault(**fault)
        except ValueError as exc:
            parser.error(str(exc))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with sim:
        print(f"CometAPI stand-in listening on {sim.url}", flush=True)
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
