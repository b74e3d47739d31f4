"""Copyable curl and Python versions of a create request, runnable as they are.

The key is always the `COMETAPI_KEY` environment variable, never its value. An uploaded image
(a data: URI in the input) is read from a file named by a variable (IMAGE_PATH, "input.png"),
not pasted as a placeholder: the snippet then runs on the user's own file."""

from __future__ import annotations

import json
import mimetypes
import pprint
import re
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from .config import API_PREFIX
from .images import human_size

_DATA_URI = re.compile(r"^data:([\w/+.-]+);base64,(.*)$", re.DOTALL)
SHORTEN_ABOVE = 200  # characters of a data URI worth printing in the JSON preview
POLL_SECONDS = 1  # the Python snippet's pause between status checks
TERMINAL = ("succeeded", "failed", "canceled", "aborted")  # aborted too: the official SDKs forget it


def request_body(model_input: dict[str, Any]) -> dict[str, Any]:
    return {"input": model_input}


def shorten_data_uris(value: Any) -> Any:
    """Long inline images become a readable placeholder (for the JSON preview, not the snippets)."""
    if isinstance(value, str):
        match = _DATA_URI.match(value)
        if match and len(value) > SHORTEN_ABOVE:
            size = len(match.group(2)) * 3 // 4
            return f"data:{match.group(1)};base64,…({human_size(size)} inline image)"
        return value
    if isinstance(value, list):
        return [shorten_data_uris(item) for item in value]
    if isinstance(value, dict):
        return {k: shorten_data_uris(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _ImageFile:
    """An inline image of the input, read from a file by the snippet instead."""

    variable: str  # IMAGE_PATH, or IMAGE_PATH_1, IMAGE_PATH_2... when there are several
    path: str  # its default value: input.png, input-1.jpg...
    mime: str


def _image_files(model_input: dict[str, Any]) -> dict[str, _ImageFile]:
    """Each distinct data URI of the input (in order) -> the file the snippet reads it from."""
    found: dict[str, str] = {}  # data URI -> its content type, in the input's order

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if match := _DATA_URI.match(value):
                found.setdefault(value, match.group(1))
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model_input)
    files = {}
    for n, (uri, mime) in enumerate(found.items(), start=1):
        extension = {"image/jpeg": ".jpg"}.get(mime) or mimetypes.guess_extension(mime) or ".img"
        suffix, name = ("", "input") if len(found) == 1 else (f"_{n}", f"input-{n}")
        files[uri] = _ImageFile(f"IMAGE_PATH{suffix}", name + extension, mime)
    return files


def _replace_images(value: Any, replace) -> Any:
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, list):
        return [_replace_images(item, replace) for item in value]
    if isinstance(value, dict):
        return {k: _replace_images(v, replace) for k, v in value.items()}
    return value


def _create_url(base_url: str, model: str) -> str:
    return f"{base_url}{API_PREFIX}/models/{model}/predictions"


# ---- curl ------------------------------------------------------------------------------------


def curl(base_url: str, model: str, model_input: dict[str, Any]) -> str:
    """A POSIX-shell create call. With inline images, the body is first written to request.json,
    each image base64-encoded from its file (no jq needed)."""
    files = _image_files(model_input)
    # The answer holds the id; its status and output are then at GET .../predictions/<id>.
    poll = ("# Then, until the status is succeeded, failed, canceled or aborted:\n"
            f"#   curl -sS -H \"Authorization: Bearer $COMETAPI_KEY\" "
            f"{shlex.quote(f'{base_url}{API_PREFIX}/predictions/')}<id>\n")
    if not files:
        body = json.dumps(request_body(model_input), indent=2, ensure_ascii=False)
        return _curl_command(base_url, model, f"-d {shlex.quote(body)}") + "\n" + poll
    # Stand-in strings mark where each image goes; the JSON text around them is printed as is.
    # A random marker cannot collide with anything the user typed.
    marker = uuid.uuid4().hex
    tokens = {uri: f"@{marker}-{n}@" for n, uri in enumerate(files)}
    body = json.dumps(request_body(_replace_images(model_input, lambda s: tokens.get(s, s))),
                      indent=2, ensure_ascii=False)
    pieces = re.split(f"@{marker}-(\\d+)@", body)
    images = list(files.values())
    lines = [f"{image.variable}={shlex.quote(image.path)}  # the image to send ({image.mime})" for image in images]
    # Checked first: a missing file would otherwise send an empty image (and start a billed run).
    readable = " && ".join(f'[ -r "${image.variable}" ]' for image in images)
    lines += [f"if {readable}; then", "  # The body, with each image read from its file as a base64 data URI.", "  {"]
    for n, piece in enumerate(pieces):
        if n % 2 == 0:
            if piece:
                lines.append(f"    printf '%s' {shlex.quote(piece)}")
        else:
            image = images[int(piece)]
            lines.append(f"    printf '%s' {shlex.quote(f'data:{image.mime};base64,')}")
            lines.append(f'    base64 < "${image.variable}" | tr -d \'\\n\'')  # GNU base64 wraps lines
    lines.append("  } > request.json")
    lines.append(_curl_command(base_url, model, "--data-binary @request.json", indent="  "))
    names = " ".join(f"${image.variable}" for image in images)
    lines += ["else", f'  echo "Cannot read {names}: put the image to send there." >&2; false', "fi"]
    return "\n".join(lines) + "\n" + poll


def _curl_command(base_url: str, model: str, body_option: str, indent: str = "") -> str:
    return (
        f"{indent}curl -sS -X POST {shlex.quote(_create_url(base_url, model))} \\\n"
        f'{indent}  -H "Authorization: Bearer $COMETAPI_KEY" \\\n'
        f'{indent}  -H "Content-Type: application/json" \\\n'
        f"{indent}  {body_option}"
    )


# ---- Python ----------------------------------------------------------------------------------


class _Code:
    """A value pprint shows as code: `data_uri(IMAGE_PATH)` in place of an inline image."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __repr__(self) -> str:
        return self.code


_PYTHON_SAVE = '''
while prediction["status"] not in TERMINAL and not prediction.get("error"):
    time.sleep(POLL_SECONDS)
    response = requests.get(f"{BASE_URL}/predictions/{prediction['id']}", headers=HEADERS, timeout=90,
                            allow_redirects=False)
    if response.status_code in (429, 500, 502, 503, 504, 524):  # busy or slow: ask again
        continue
    if response.status_code != 200:
        sys.exit(f"status check refused: HTTP {response.status_code} {response.text[:500]}")
    prediction = response.json()

if prediction["status"] != "succeeded":
    sys.exit(f"{prediction['status']}: {prediction.get('error')}")

# One URL or a list of them (files expire an hour after the run); items may be data: URIs.
output = prediction["output"]
for n, item in enumerate([output] if isinstance(output, str) else output or []):
    if item.startswith("data:"):
        header, _, payload = item.partition(",")
        content_type, data = header[5:].split(";")[0], base64.b64decode(payload)
    else:  # a file host, not CometAPI: no key is sent there
        download = requests.get(item, timeout=120)
        download.raise_for_status()
        content_type, data = download.headers.get("Content-Type", "").split(";")[0], download.content
    extension = {v: k for k, v in TYPES.items()}.get(content_type) or mimetypes.guess_extension(content_type)
    # The id is the server's text: only letters, digits, - and _ reach the file name.
    name = f"{re.sub(r'[^A-Za-z0-9_-]', '_', str(prediction['id']))[:64]}-{n}{extension or '.img'}"
    with open(name, "wb") as file:
        file.write(data)
    print("saved", name)
'''

_PYTHON_DATA_URI = '''

def data_uri(path):
    """The file as a data URI, the way the API takes an image inline."""
    content_type = TYPES.get(os.path.splitext(path)[1].lower()) or mimetypes.guess_type(path)[0]
    with open(path, "rb") as file:
        return f"data:{content_type};base64,{base64.b64encode(file.read()).decode('ascii')}"
'''


def python(base_url: str, model: str, model_input: dict[str, Any]) -> str:
    """A script that creates the prediction, polls it to a final status, and saves the images."""
    files = _image_files(model_input)
    shown = _replace_images(model_input, lambda s: _Code(f"data_uri({files[s].variable})") if s in files else s)
    body = pprint.pformat(shown, sort_dicts=False, width=90)
    settings = [
        f"BASE_URL = {f'{base_url}{API_PREFIX}'!r}",
        f"MODEL = {model!r}",
        *(f"{image.variable} = {image.path!r}  # the image to send ({image.mime})" for image in files.values()),
        "HEADERS = {\"Authorization\": f\"Bearer {os.environ['COMETAPI_KEY']}\"}",
        "TERMINAL = {" + ", ".join(map(repr, TERMINAL)) + "}",
        f"POLL_SECONDS = {POLL_SECONDS}",
        # Named here: older Pythons' mimetypes do not know WEBP.
        'TYPES = {".png": "image/png", ".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".webp": "image/webp", '
        '".gif": "image/gif"}',
    ]
    return (
        "import base64\nimport mimetypes\nimport os\nimport re\nimport sys\nimport time\n\nimport requests\n\n"
        + "\n".join(settings) + "\n"
        + (_PYTHON_DATA_URI + "\n" if files else "")
        + f"\nmodel_input = {body}\n\n"
        "# Redirects are not followed: the key goes to BASE_URL only. A failed create is not\n"
        "# retried: it may have been accepted (and billed) all the same.\n"
        "response = requests.post(f\"{BASE_URL}/models/{MODEL}/predictions\", headers=HEADERS,\n"
        "                         json={\"input\": model_input}, timeout=60, allow_redirects=False)\n"
        "if response.status_code not in (200, 201):\n"
        "    sys.exit(f\"create refused: HTTP {response.status_code} {response.text[:500]}\")\n"
        "prediction = response.json()\n"
        "print(\"prediction\", prediction[\"id\"])\n"
        + _PYTHON_SAVE
    )
