"""The Create page's curl and Python snippets run as they are: copied into a file and started,
they reach the API (here the stand-in, over a real socket), the Python one follows the prediction
to its end and saves the images, and an uploaded image is read from a file next to them.
The key comes only from the COMETAPI_KEY environment variable."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from comet import snippets
from comet.sim import Sim
from support.api import KEY, api_requests
from support.hostile import HostileServer, answer, prediction

SCHNELL, DEV, FLUX2 = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev", "black-forest-labs/flux-2-pro"
CURL = shutil.which("curl")


@pytest.fixture
def sim():
    # This stand-in checks the key: a snippet that sent anything but $COMETAPI_KEY is refused.
    # Long enough a run that the Python snippet has to poll at least once.
    with Sim(key=KEY, start_delay=0.1, run_time=1.2) as server:
        yield server


def png(color: tuple[int, int, int], size=(48, 32), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def child_env(key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COMETAPI_KEY" and "proxy" not in k.lower()}
    return {**env, "COMETAPI_KEY": key, "NO_PROXY": "127.0.0.1,localhost"}


def run_python(code: str, cwd, key: str = KEY) -> subprocess.CompletedProcess:
    (cwd / "snippet.py").write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, "snippet.py"], cwd=cwd, env=child_env(key), capture_output=True,
                          text=True, timeout=90)


def run_shell(code: str, cwd, shell: str = "bash") -> subprocess.CompletedProcess:
    (cwd / "snippet.sh").write_text(code, encoding="utf-8")
    return subprocess.run([shell, "snippet.sh"], cwd=cwd, env=child_env(), capture_output=True, text=True,
                          timeout=60)


def saved_images(folder) -> dict[str, Image.Image]:
    """The images the snippet wrote (not the input images the test put there)."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".webp", ".png", ".jpg") and not path.name.startswith("input"):
            with Image.open(path) as image:
                image.load()  # a truncated or fake file fails here
                found[path.name] = image
    return found


# ---- Python ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output_style", ["model", "data_uri"])
def test_the_python_snippet_creates_polls_and_saves_every_image(sim, tmp_path, output_style):
    sim.configure(output_style=output_style)  # outputs as file URLs, or inline as data: URIs
    model_input = {"prompt": "a red fox in snow", "num_outputs": 2, "output_format": "png"}
    done = run_python(snippets.python(sim.url, SCHNELL, model_input), tmp_path)
    assert done.returncode == 0, done.stderr
    (pid,) = sim.predictions
    assert [r["json"] for r in api_requests(sim, "POST")] == [{"input": model_input}]
    assert len(api_requests(sim, "GET", f"/predictions/{pid}")) >= 1  # it waited for the end
    images = saved_images(tmp_path)
    assert sorted(images) == [f"{pid}-0.png", f"{pid}-1.png"]
    assert all(image.format == "PNG" and image.width > 0 for image in images.values())


def test_the_python_snippet_reads_the_uploaded_image_from_its_file(sim, tmp_path):
    uploaded = data_uri(png((200, 30, 30)))  # what the form put in the input
    code = snippets.python(sim.url, DEV, {"prompt": "make it blue", "image": uploaded})
    assert base64.b64encode(png((200, 30, 30))).decode()[:40] not in code  # no image pasted in...
    assert "inline image" not in code  # ...and no placeholder that would not run
    mine = png((20, 40, 220), size=(64, 64))
    (tmp_path / "input.png").write_bytes(mine)  # IMAGE_PATH's default
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    (post,) = api_requests(sim, "POST")
    assert post["json"] == {"input": {"prompt": "make it blue", "image": data_uri(mine)}}
    (pid,) = sim.predictions
    assert list(saved_images(tmp_path)) == [f"{pid}-0.webp"]


def test_several_uploaded_images_each_get_their_own_file(sim, tmp_path):
    first, second = data_uri(png((1, 2, 3))), data_uri(png((4, 5, 6), fmt="JPEG"), "image/jpeg")
    code = snippets.python(sim.url, FLUX2, {"prompt": "blend them", "input_images": [first, second]})
    assert "IMAGE_PATH_1 = 'input-1.png'" in code and "IMAGE_PATH_2 = 'input-2.jpg'" in code
    one, two = png((250, 250, 0)), png((0, 250, 250), fmt="JPEG")
    (tmp_path / "input-1.png").write_bytes(one)
    (tmp_path / "input-2.jpg").write_bytes(two)
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    (post,) = api_requests(sim, "POST")
    assert post["json"]["input"]["input_images"] == [data_uri(one), data_uri(two, "image/jpeg")]
    assert len(saved_images(tmp_path)) == 1


@pytest.mark.parametrize("marker, status", [("[sim:fail]", "failed"), ("[sim:abort]", "aborted")])
def test_the_python_snippet_stops_at_a_failure_and_says_why(sim, tmp_path, marker, status):
    # `aborted` ends the wait too (the official SDKs would poll it forever: the timeout says no).
    done = run_python(snippets.python(sim.url, SCHNELL, {"prompt": f"{marker} a vase"}), tmp_path)
    assert done.returncode != 0
    assert f"{status}: Prediction {status}: simulated" in done.stderr
    assert saved_images(tmp_path) == {}


def test_the_python_snippet_sends_the_key_from_the_environment_only(sim, tmp_path):
    code = snippets.python(sim.url, SCHNELL, {"prompt": "a kite"})
    assert KEY not in code and 'os.environ[\'COMETAPI_KEY\']' in code
    refused = run_python(code, tmp_path, key="sk-wrong-key-0000000000")
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr
    assert sim.predictions == {}
    assert run_python(code, tmp_path).returncode == 0  # the right key in the environment: accepted
    assert len(sim.predictions) == 1


def test_an_id_from_the_server_cannot_name_a_file_outside_the_folder(tmp_path):
    # The id is the server's text: a hostile one must not become a path.
    work = tmp_path / "work"
    work.mkdir()
    with HostileServer() as server:
        server.create_route(SCHNELL, answer(prediction("../../escaped", status="succeeded",
                                                       output=[data_uri(png((9, 9, 9)))]), status=201))
        done = run_python(snippets.python(server.url, SCHNELL, {"prompt": "x"}), work)
    assert done.returncode == 0, done.stderr
    assert list(saved_images(work)) == ["______escaped-0.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


# ---- curl ------------------------------------------------------------------------------------


needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
HOSTILE_PROMPT = "it's \"$HOME\" `id` $(id) %s %d \\n 100% {braces} ünïcødé 🦊"


@needs_curl
@pytest.mark.parametrize("shell", ["bash", "sh"])  # sh: plain POSIX (dash here)
def test_the_curl_snippet_sends_exactly_the_body_with_the_key_from_the_environment(sim, tmp_path, shell):
    model_input = {"prompt": HOSTILE_PROMPT, "num_outputs": 2, "go_fast": True}
    code = snippets.curl(sim.url, SCHNELL, model_input)
    assert KEY not in code and "$COMETAPI_KEY" in code
    done = run_shell(code, tmp_path, shell)
    assert done.returncode == 0, done.stderr
    (post,) = api_requests(sim, "POST")
    assert post["json"] == {"input": model_input}  # quotes, $, backticks and % arrive untouched
    assert post["headers"]["authorization"] == f"Bearer {KEY}"
    assert json.loads(done.stdout)["id"] in sim.predictions


@needs_curl
@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_the_curl_snippet_base64_encodes_the_image_file(sim, tmp_path, shell):
    code = snippets.curl(sim.url, DEV, {"prompt": HOSTILE_PROMPT, "image": data_uri(png((1, 1, 1)))})
    assert "inline image" not in code and "IMAGE_PATH=input.png" in code
    mine = png((10, 200, 10), size=(300, 200))  # base64 longer than a line: wrapping must not break it
    (tmp_path / "input.png").write_bytes(mine)
    done = run_shell(code, tmp_path, shell)
    assert done.returncode == 0, done.stderr
    (post,) = api_requests(sim, "POST")
    assert post["json"] == {"input": {"prompt": HOSTILE_PROMPT, "image": data_uri(mine)}}


@needs_curl
def test_the_curl_snippet_fails_loudly_without_its_image_file(sim, tmp_path):
    code = snippets.curl(sim.url, DEV, {"prompt": "x", "image": data_uri(png((1, 1, 1)))})
    done = run_shell(code, tmp_path)  # no input.png here
    assert "input.png" in done.stderr
    assert sim.predictions == {}  # a body without its image is refused, nothing runs
