"""A tiny upstream of the one-create tests' own (not the project's stand-in), whose create
answers only after a delay, as CometAPI sometimes does; or never (the connection dropped); or
with a refusal."""

from __future__ import annotations

import base64
import io
import json
import secrets
import string
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

SCHNELL = "black-forest-labs/flux-schnell"
CREATE_PATH = f"/replicate/v1/models/{SCHNELL}/predictions"


def _png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (40, 120, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SlowUpstream:
    """POST .../predictions answers after `delay` seconds (201 with a new prediction), or, with
    `drop`, closes the connection without an answer, or with `refuse` answers 422;
    GET /replicate/v1/predictions/{id} says succeeded with a data: URI image. Every POST is
    counted as it arrives."""

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
