"""The core's floor plan (DESIGN.md): the ground floor (settings, data types, the catalog, the
store and the ledger) never imports the HTTP client, the downloader or the stand-in, and no core
module imports Streamlit. Read from the source, so a stray import fails here, not in production."""

from __future__ import annotations

import ast

import pytest

from support import ROOT

CORE = ROOT / "comet"
NETWORK = {"comet.client", "comet.fetch", "comet.net", "comet.sim", "comet.tracker"}
# The store is a package: every module of it is on the ground floor.
STORE = sorted(f"store/{path.stem}" for path in (CORE / "store").glob("*.py"))
BATCH = sorted(f"batch/{path.stem}" for path in (CORE / "batch").glob("*.py"))
GROUND = ["config", "errors", "prediction", "catalog", "prices", "media", "images", *STORE, "ledger",
          "export", "redact", "throttle", "signin", "snippets", *BATCH, "sheet"]
# Every core module, `ui` aside (Streamlit's own pieces), as a path under comet/ without ".py".
CORE_MODULES = sorted(str(path.relative_to(CORE).with_suffix("").as_posix()) for path in CORE.rglob("*.py")
                      if path.relative_to(CORE).parts[0] != "ui")


def imports(module: str) -> set[str]:
    """Every module `comet/<module>.py` imports (`module` may be a path such as "store/db"), as
    absolute names."""
    package = ".".join(["comet", *module.split("/")[:-1]])
    return imports_in((CORE / f"{module}.py").read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> set[str]:
    """Every module `source` imports, as absolute names, relative imports resolved from `package`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            name = ".".join(part for part in (base, node.module or "") if part)
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("module", GROUND)
def test_the_ground_floor_never_imports_the_http_client_the_downloader_or_the_stand_in(module):
    assert imports(module) & NETWORK == set()


@pytest.mark.parametrize("module", CORE_MODULES)
def test_no_core_module_imports_streamlit(module):
    assert not any(name == "streamlit" or name.startswith("streamlit.") for name in imports(module))


def test_the_check_sees_an_import_of_the_client():
    # The good case above passes only because the check can see: the tracker does use the client.
    assert "comet.client" in imports("tracker") and "comet.fetch" in imports("tracker")


def test_the_check_sees_into_the_store_package():
    # Each store module is checked, and its relative imports are read from where it sits:
    # `..client` in comet/store/ is the client, `.media` is the store's own module.
    assert {"store/__init__", "store/db", "store/records", "store/queries"} <= set(GROUND) & set(CORE_MODULES)
    assert "comet.client.Client" in imports_in("from ..client import Client", "comet.store")
    assert imports_in("from .media import MediaMoves", "comet.store") & NETWORK == set()
    assert "comet.store.media" in imports_in("from .media import MediaMoves", "comet.store")
    assert "comet.sim" in imports_in("from .. import sim", "comet.store")
    assert "comet.store.db" in imports("store/records") and "comet.media" in imports("store/records")


# ---- the tracker is the only writer of tracked predictions (pages read the store) ----------------

VIEWS = sorted([ROOT / "streamlit_app.py", *(ROOT / "pages").glob("*.py"), *(CORE / "ui").glob("*.py")])
TRACKER_WRITES = {"record", "update", "save_outputs", "give_up", "mark_poll_failure", "resume_stopped"}


def store_writes(source: str) -> list[str]:
    """Calls such as `conn.store.update(...)` or `store.record(...)` in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TRACKER_WRITES:
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name.lower().endswith("store"):
                found.append(f"{name}.{node.func.attr} (line {node.lineno})")
    return found


@pytest.mark.parametrize("view", VIEWS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_page_or_ui_piece_writes_a_tracked_prediction(view):
    # Cancel, track and resume go through the tracker (Connection.cancel/track/follow).
    assert store_writes(view.read_text(encoding="utf-8")) == []


def test_the_check_sees_a_page_writing_the_store():
    # The card's Cancel before the tracker owned it, and the other shapes such a write takes.
    assert store_writes("conn.store.update(conn.client.cancel(record.id))") == ["store.update (line 1)"]
    assert store_writes("store = conn.store\nstore.record(p)\nself._store.save_outputs(i, [])") == [
        "store.record (line 2)", "_store.save_outputs (line 3)"]
    assert store_writes("conn.store.get(pid)\nconn.tracker.cancel(pid)") == []
