"""Helpers the tests import (`from support.waiting import wait_until`); the fixtures stay in the
conftest.py files. pyproject.toml puts tests/ on the import path, so `support` is found from any
test folder, and from the scripts here when they put tests/ there themselves."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: streamlit_app.py, comet/, pages/
