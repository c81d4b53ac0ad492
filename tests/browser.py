"""A real TensorBoard in a real browser, for the dashboard tests and the README's screenshots.

:func:`tensorboard_server` starts ``tensorboard`` on 127.0.0.1 on a free port, over a log
folder, and always stops it; :func:`chromium` starts Debian's headless Chromium through its
ChromeDriver (selenium), with the flags that keep it off the network. Both are context
managers; :func:`missing` says why the browser tests cannot run here, or None.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"  # the only address these servers listen on
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver",)
STARTUP_S = 90


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).is_file()), None) or shutil.which(name)


def missing() -> str | None:
    """Why a browser test cannot run on this machine (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _first(CHROMIUM, "chromium") is None:
        return "Chromium is not installed (Debian: apt-get install chromium chromium-driver)"
    if _first(DRIVER, "chromedriver") is None:
        return "ChromeDriver is not installed (Debian: apt-get install chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
        return json.loads(response.read().decode())


@contextlib.contextmanager
def tensorboard_server(logdir: Path, *, wait_for_runs: int = 1) -> Iterator[str]:
    """TensorBoard over ``logdir`` on 127.0.0.1; yields its URL once it lists at least
    ``wait_for_runs`` runs. The server is stopped (and waited for) on the way out."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
        + ["--host", HOST, "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_runs(server, port, wait_for_runs)
        yield f"http://{HOST}:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        server.stderr.close()


def _wait_for_runs(server: subprocess.Popen, port: int, count: int) -> None:
    deadline, last = time.monotonic() + STARTUP_S, None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"tensorboard exited with {server.returncode}: {server.stderr.read()}"
            )
        try:
            runs = get_json(port, "/data/runs")
            if len(runs) >= count:
                return
            last = runs
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last = err
        time.sleep(0.3)
    raise RuntimeError(f"tensorboard did not list {count} runs within {STARTUP_S} s: {last!r}")


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator:
    """A headless Chromium driven by selenium, in a fresh profile that is removed after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cnnrun-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(_first(DRIVER, "chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
