"""Saving an output means downloading it: only images, only from safe places, never with a credential."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from PIL import Image

from comet import fetch
from comet.fetch import FetchError, StoredFile, fetch_output


def png_bytes(size: tuple[int, int] = (16, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _WebServer

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self.server.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        status, headers, body = self.server.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"no"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:  # HTTP/1.0 without Content-Length: the body ends when the connection closes
            self.end_headers()
            for chunk in body:
                self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


class _WebServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict
    seen: list


class Web:
    """A tiny file host on a loopback address, standing in for an image CDN."""

    def __init__(self, host: str) -> None:
        self.server = _WebServer((host, 0), _Handler)
        self.server.routes, self.server.seen = {}, []
        self.host, self.port = host, self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def origin(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(self, path: str, *, status: int = 200, headers: dict | None = None, body=b"") -> str:
        self.server.routes[path] = (status, headers or {}, body)
        return self.url(path)

    def redirect(self, path: str, to: str) -> str:
        return self.route(path, status=302, headers={"Location": to})

    @property
    def seen(self) -> list[dict]:
        return self.server.seen

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    server = Web("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def other_web():
    server = Web("127.0.0.2")  # another loopback address, made to pass as public below
    yield server
    server.close()


def test_an_output_of_the_stand_in_is_fetched_and_no_key_goes_with_it(sim, client):
    prediction = client.wait(client.create("black-forest-labs/flux-schnell", {"prompt": "a red fox"}).id, timeout=10)
    sim.clear_requests()

    stored = fetch_output(prediction.output[0], private_origin=urlsplit(sim.url).netloc)

    assert stored.content_type == "image/webp"
    assert stored.source_url == prediction.output[0]
    assert Image.open(io.BytesIO(stored.data)).size == (512, 512)
    downloads = [r for r in sim.requests if r["path"].startswith("/files/")]
    assert len(downloads) == 1 and "authorization" not in downloads[0]["headers"]


def test_credentials_from_the_environment_are_never_sent(web, monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))

    fetch_output(web.route("/a.png", headers={"Content-Type": "image/png"}, body=png_bytes()),
                 private_origin=web.origin)

    assert "authorization" not in web.seen[0]["headers"]


def test_a_generically_labelled_image_gets_its_real_type_from_the_bytes(web):
    url = web.route("/blob", headers={"Content-Type": "application/octet-stream"}, body=png_bytes())

    stored = fetch_output(url, private_origin=web.origin)

    assert stored == StoredFile("image/png", png_bytes(), url)


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json", "image/svg+xml"])
def test_what_is_not_an_image_is_refused(web, content_type):
    url = web.route("/thing", headers={"Content-Type": content_type}, body=b"<svg onload='alert(1)'/>")

    with pytest.raises(FetchError, match="not an image|not a web image|cannot|can be read"):
        fetch_output(url, private_origin=web.origin)


def test_an_image_label_on_bytes_that_are_no_image_is_refused(web):
    url = web.route("/fake.png", headers={"Content-Type": "image/png"}, body=b"\x89PNG but not really")

    with pytest.raises(FetchError, match="not an image that can be read"):
        fetch_output(url, private_origin=web.origin)


def test_a_file_larger_than_the_cap_is_refused_with_or_without_a_declared_length(web):
    declared = web.route("/declared", headers={"Content-Type": "image/png"}, body=png_bytes((200, 200)) + b"\0" * 2000)
    streamed = web.route("/streamed", headers={"Content-Type": "image/png"}, body=[b"\0" * 700] * 3)

    for url in (declared, streamed):
        with pytest.raises(FetchError, match="allowed"):
            fetch_output(url, private_origin=web.origin, max_bytes=1000)


def test_up_to_three_redirects_are_followed_and_a_fourth_is_refused(web):
    image = web.route("/image.png", headers={"Content-Type": "image/png"}, body=png_bytes())
    for hop in (1, 2, 3, 4):
        web.redirect(f"/hop{hop}", web.url(f"/hop{hop + 1}") if hop < 4 else image)

    assert fetch_output(web.url("/hop2"), private_origin=web.origin).source_url == web.url("/hop2")
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch_output(web.url("/hop1"), private_origin=web.origin)


def test_a_redirect_to_a_local_host_is_refused_when_private_hosts_are_not_allowed(web, other_web, monkeypatch):
    # Treat 127.0.0.2 as a public CDN, so that only the redirect's target is local.
    real_is_public = fetch._is_public
    monkeypatch.setattr(fetch, "_is_public", lambda address: address == "127.0.0.2" or real_is_public(address))
    target = web.route("/inside.png", headers={"Content-Type": "image/png"}, body=png_bytes())
    direct = other_web.route("/ok.png", headers={"Content-Type": "image/png"}, body=png_bytes())
    bounce = other_web.redirect("/bounce", target)

    assert fetch_output(direct).content_type == "image/png"
    with pytest.raises(FetchError, match="private, local or reserved"):
        fetch_output(bounce)
    assert web.seen == []  # the local host was never contacted


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x.png", "http://localhost/x.png", "http://169.254.169.254/latest/meta-data",
     "http://10.1.2.3/x.png", "http://[::1]/x.png", "http://[::ffff:127.0.0.1]/x.png", "http://0.0.0.0/x.png"],
)
def test_private_and_local_hosts_are_refused_before_connecting(url):
    with pytest.raises(FetchError, match="private, local or reserved"):
        fetch_output(url)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "javascript:alert(1)", "ftp://example.com/x.png", "//example.com/x.png",
     "gopher://example.com/", "http:///no-host"],
)
def test_other_schemes_are_refused(url):
    with pytest.raises(FetchError, match="only http"):
        fetch_output(url, private_origin="example.com:80")


def test_a_redirect_to_another_scheme_is_refused(web):
    with pytest.raises(FetchError, match="a file: URL"):
        fetch_output(web.redirect("/to-file", "file:///etc/passwd"), private_origin=web.origin)


def test_a_url_carrying_a_password_is_refused(web):
    url = web.route("/a.png", headers={"Content-Type": "image/png"}, body=png_bytes())
    with pytest.raises(FetchError, match="user name or password") as caught:
        fetch_output(url.replace("http://", "http://user:hunter2@"), private_origin=web.origin)
    assert "hunter2" not in str(caught.value)
    assert web.seen == []


def test_a_data_uri_is_decoded():
    uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()

    stored = fetch_output(uri)

    assert stored == StoredFile("image/png", png_bytes(), "data:image/png;base64,...")


@pytest.mark.parametrize(
    "uri",
    ["data:image/png;base64," + base64.b64encode(b"<script>alert(1)</script>").decode(),
     "data:text/html;base64," + base64.b64encode(png_bytes()).decode(),
     "data:image/png," + "plain-text",
     "data:image/png;base64,@@not-base64@@"],
)
def test_a_data_uri_that_is_not_a_base64_image_is_refused(uri):
    with pytest.raises(FetchError, match="Refused a data: URI|not an image"):
        fetch_output(uri)


def test_errors_say_whether_a_later_try_may_work(web):
    web.route("/busy", status=503)
    with pytest.raises(FetchError) as missing:
        fetch_output(web.url("/expired.png"), private_origin=web.origin)
    with pytest.raises(FetchError) as busy:
        fetch_output(web.url("/busy"), private_origin=web.origin)
    with pytest.raises(FetchError) as refused:
        fetch_output("http://127.0.0.1:1/x.png", private_origin="127.0.0.1:1")

    assert missing.value.gone and not missing.value.retryable
    assert busy.value.retryable and not busy.value.gone
    assert refused.value.retryable
