"""Run the real app (`streamlit run streamlit_app.py`) on a free loopback port, and a Chromium
to look at it: the harness for whole-flow browser tests and README screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from support import ROOT

SYSTEM_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
APP_ENV_NAMES = ("COMETAPI_KEY", "COMETAPI_BASE_URL", "COMET_DATA_DIR", "COMET_DATABASE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`streamlit run` in a child process; `env` adds settings (demo mode when no key is given),
    `options` Streamlit command-line options (e.g. ["--runner.postScriptGC", "true"])."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None,
                 options: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.options = options or []
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = env or {}
        self.log_path = data_dir / f"streamlit-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> AppServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in APP_ENV_NAMES}
        env.update({"COMET_DATA_DIR": str(self.data_dir), **self.env})
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
                "--server.port", str(self.port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none", *self.options,
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                # Only the health route says "ok"; every other path answers 200 with the shell page.
                if requests.get(f"{self.url}/_stcore/health", timeout=2).text == "ok":
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not become healthy in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """As a crash would: no clean shutdown."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def launch_chromium(playwright):
    """Debian's Chromium where it exists (CI, this machine), else Playwright's own (a laptop)."""
    executable = SYSTEM_CHROMIUM if Path(SYSTEM_CHROMIUM).exists() else shutil.which("chromium")
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)


def wait_until_idle(page, timeout: float = 30_000) -> None:
    """The script finished its run (not reliable with a ticking fragment: wait for content then)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def generate_in_each(pages, url: str, prompts: list[str], timeout: float = 90_000) -> None:
    """Open the app in every page, type its prompt and press Generate, the pages side by side:
    each step is started in all of them before the next (many sessions at once on few cores make
    every first draw slow, hence the long default timeout)."""
    for page in pages:
        page.set_default_timeout(timeout)
        page.goto(url)
    for page, prompt in zip(pages, prompts, strict=True):
        wait_until_idle(page, timeout=timeout)
        box = page.get_by_role("textbox", name="Prompt")
        box.fill(prompt)
        box.press("Tab")  # Streamlit commits a text area on blur
    for page in pages:
        wait_until_idle(page, timeout=timeout)
        page.get_by_role("button", name="Generate").click()
