"""A deliberately hostile upstream for the reliability tests: it speaks the routes of CometAPI
but answers slowly, oddly or maliciously, as each test tells it to. Not the project's stand-in
(comet.sim is polite); this one exists to show that nothing it does gets through.

A test registers a behaviour per path (`route(path, behaviour)`); a behaviour is a function of
the request handler that writes the whole answer. Helpers below build the usual ones: a JSON
answer, a body that trickles a byte at a time, an endless body, an image bomb."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

Behaviour = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    server: HostileServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.log(self.command, self.path, dict(self.headers.items()), body)
        behaviour = self.server.behaviour(self.command, self.path)
        if behaviour is None:
            return send_json(self, 404, {"detail": "Not found."})
        try:
            behaviour(self)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: that is the point
            pass

    do_GET = do_POST = _serve  # noqa: N815 - the base class's names

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass

    @property
    def bearer(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[tuple[str, str], Behaviour] = {}
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()  # ends every trickle
        self.shutdown()
        self.server_close()

    def route(self, method: str, path: str, behaviour: Behaviour) -> str:
        self.routes[(method, path)] = behaviour
        return self.url + path

    def status_route(self, prediction_id: str, behaviour: Behaviour) -> None:
        self.route("GET", f"/replicate/v1/predictions/{prediction_id}", behaviour)

    def create_route(self, model: str, behaviour: Behaviour) -> None:
        self.route("POST", f"/replicate/v1/models/{model}/predictions", behaviour)

    def behaviour(self, method: str, path: str) -> Behaviour | None:
        return self.routes.get((method, path.split("?")[0]))

    def log(self, method: str, path: str, headers: dict, body: bytes) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body,
                                  "at": time.monotonic()})

    def count(self, method: str, path_part: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["method"] == method and path_part in r["path"])


# ---- behaviours ------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def prediction(prediction_id: str, status: str = "processing", **fields: object) -> dict:
    return {"id": prediction_id, "model": "black-forest-labs/flux-schnell", "status": status,
            "input": {"prompt": "hostile"}, "created_at": now_iso(), "logs": "", "error": None,
            "output": None, **fields}


def send_json(handler: Handler, status: int, body: object, headers: dict | None = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def answer(body: object, status: int = 200, headers: dict | None = None, delay: float = 0.0) -> Behaviour:
    """A JSON answer (a dict/list, or raw bytes sent as they are), after `delay` seconds."""
    def behave(handler: Handler) -> None:
        if delay and handler.server.stopping.wait(delay):
            return
        send_json(handler, status, body(handler) if callable(body) else body, headers)
    return behave


def trickle(content_type: str = "application/json", length: int | None = 10_000, every: float = 1.0) -> Behaviour:
    """Headers at once, then one byte every `every` seconds until the test ends: each read gets
    a byte well inside any read timeout, so only a wall-clock deadline ends it."""
    def behave(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        else:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()
        while not handler.server.stopping.wait(every):
            handler.wfile.write(b" ")
            handler.wfile.flush()
        handler.close_connection = True
    return behave


def endless(prefix: bytes = b'{"id": "bomb000000000000000000", "logs": "', megabytes: int = 300) -> Behaviour:
    """A body of `megabytes` MB, sent as fast as the client reads it (no Content-Length)."""
    block = b"x" * (1024 * 1024)

    def behave(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(prefix)
        for _ in range(megabytes):
            if handler.server.stopping.is_set():
                break
            handler.wfile.write(block)
        handler.close_connection = True
    return behave


def file(data: bytes, content_type: str = "image/png") -> Behaviour:
    def behave(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return behave


def echo_key(handler: Handler) -> None:
    """Everything a server could echo the Authorization header into."""
    key = handler.bearer
    body = prediction(handler.path.rsplit("/", 1)[-1], "failed", error=f"bad request from {key}",
                      logs=f"auth header was Bearer {key}\n", output=[f"https://cdn.example/{key}.png"],
                      input={"prompt": f"echo {key}"})
    send_json(handler, 200, body, headers={"X-Request-Id": key})


def png(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(side: int = 13000) -> bytes:
    """A valid greyscale PNG of side x side pixels (169 MP at 13000) that is a few hundred KB on
    the wire: zlib squeezes the all-black rows; decoding it would take side*side bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    rows_per_block = max(1, (4 * 1024 * 1024) // len(row))
    parts = []
    for start in range(0, side, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, side - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
