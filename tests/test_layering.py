"""The core's floor plan (DESIGN.md): the ground floor (settings, data types, the catalog, the
store and the ledger) never imports the HTTP client, the downloader or the stand-in, and no core
module imports Streamlit. Read from the source, so a stray import fails here, not in production."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "comet"
NETWORK = {"comet.client", "comet.fetch", "comet.net", "comet.sim", "comet.tracker"}
GROUND = ["config", "errors", "prediction", "catalog", "prices", "media", "images", "store", "ledger",
          "export", "redact", "throttle", "signin"]


def imports(module: str) -> set[str]:
    """Every module `comet/<module>.py` imports, as absolute names."""
    tree = ast.parse((CORE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "comet" if node.level else ""
            name = ".".join(part for part in (base, node.module or "") if part)
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("module", GROUND)
def test_the_ground_floor_never_imports_the_http_client_the_downloader_or_the_stand_in(module):
    assert imports(module) & NETWORK == set()


@pytest.mark.parametrize("module", sorted(p.stem for p in CORE.glob("*.py")))
def test_no_core_module_imports_streamlit(module):
    assert not any(name == "streamlit" or name.startswith("streamlit.") for name in imports(module))


def test_the_check_sees_an_import_of_the_client():
    # The good case above passes only because the check can see: the tracker does use the client.
    assert "comet.client" in imports("tracker") and "comet.fetch" in imports("tracker")
