"""Copyable curl and Python versions of a create request. The key is always written as the
`COMETAPI_KEY` environment variable, never its value."""

from __future__ import annotations

import json
import pprint
import re
import shlex
from typing import Any

from .client import API_PREFIX
from .images import human_size

_DATA_URI = re.compile(r"^data:([\w/+.-]+);base64,(.*)$", re.DOTALL)
SHORTEN_ABOVE = 200  # characters of a data URI worth printing in a snippet


def request_body(model_input: dict[str, Any]) -> dict[str, Any]:
    return {"input": model_input}


def shorten_data_uris(value: Any) -> Any:
    """Long inline images become a readable placeholder (the snippet says so)."""
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


def curl(base_url: str, model: str, model_input: dict[str, Any]) -> str:
    body = json.dumps(request_body(shorten_data_uris(model_input)), indent=2, ensure_ascii=False)
    return (
        f"curl -X POST {shlex.quote(f'{base_url}{API_PREFIX}/models/{model}/predictions')} \\\n"
        '  -H "Authorization: Bearer $COMETAPI_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}"
    )


def python(base_url: str, model: str, model_input: dict[str, Any]) -> str:
    body = pprint.pformat(request_body(shorten_data_uris(model_input)), sort_dicts=False, width=90)
    return (
        "import os\n\nimport requests\n\n"
        "response = requests.post(\n"
        f"    {f'{base_url}{API_PREFIX}/models/{model}/predictions'!r},\n"
        '    headers={"Authorization": f"Bearer {os.environ[\'COMETAPI_KEY\']}"},\n'
        f"    json={body.replace(chr(10), chr(10) + '         ')},\n"
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        'print(response.json()["id"])  # then GET .../predictions/<id> until it is final\n'
    )
