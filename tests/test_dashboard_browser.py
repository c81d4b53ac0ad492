"""The dashboard as a user sees it: a tiny run and a 2-job sweep, TensorBoard serving them on
127.0.0.1, and Debian's headless Chromium reading the page (selenium).

Skipped, with the reason, where selenium, Chromium or ChromeDriver is missing. The same
test writes the README's screenshots when ``CNNRUN_SCREENSHOTS`` names a folder::

    CNNRUN_SCREENSHOTS=tests/screenshots python -m pytest tests/test_dashboard_browser.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import chromium, missing, tensorboard_server
from runner_helpers import TINY, run_config

from cnnrun.run import logger as tags
from cnnrun.run.train import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]
WAIT_S = 90
# every element matching a CSS selector, shadow roots included (TensorBoard's plugins are
# web components)
DEEP = """
function deep(root, sel, out) {
  root.querySelectorAll(sel).forEach(e => out.push(e));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
  return out;
}
function texts(sel) {
  // an element's text with that of every shadow root inside it (the page's web components)
  const text = e => {
    let t = e.textContent;
    const inner = e.shadowRoot ? [e.shadowRoot] : [];
    deep(e.shadowRoot || e, '*', []).forEach(c => { if (c.shadowRoot) inner.push(c.shadowRoot); });
    inner.forEach(r => { t += ' ' + r.textContent; });
    return t;
  };
  return deep(document, sel, []).map(e => text(e).trim().replace(/\\s+/g, ' '));
}
"""


def texts(driver, selector: str) -> list[str]:
    return driver.execute_script(DEEP + f"return texts({selector!r});")


def wait_for(driver, selector: str, predicate, what: str) -> list[str]:
    """The texts of ``selector`` once ``predicate`` holds for them (at most WAIT_S s)."""
    deadline, found = time.monotonic() + WAIT_S, []
    while time.monotonic() < deadline:
        found = texts(driver, selector)
        if predicate(found):
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} did not appear within {WAIT_S} s; the page showed {found[:30]}")


def screenshot(driver, name: str, tmp: Path) -> None:
    time.sleep(3)  # the charts draw after their data arrives
    folder = Path(os.environ.get("CNNRUN_SCREENSHOTS") or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A lone run and a 2-job sweep under one log folder, TensorBoard over it, and a browser:
    yields (driver, TensorBoard's URL, a scratch folder)."""
    root = tmp_path_factory.mktemp("dashboard")
    epochs = ["trainer.max_epochs=3"]
    # the lone run learns the digits, for curves worth a screenshot
    digits = ["data=digits", "data.image_size=16", "data.batch_size=32", "conv.padding=same"]
    train(run_config(root / "runs" / "lone", [*digits, "trainer.max_epochs=5"]))
    sweep = subprocess.run(
        [sys.executable, "-m", "cnnrun", "-m", *TINY, *epochs, "optim.lr=0.05,0.1"]
        + [f"hydra.sweep.dir={root / 'runs' / 'multirun'}", "hydra/launcher=basic"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stderr
    # 3 runs (train, validation and the run itself) for each of the 3
    with tensorboard_server(root / "runs", wait_for_runs=9) as url, chromium() as driver:
        yield driver, url, root


def test_time_series_opens_on_loss_and_accuracy(page):
    driver, url, root = page
    driver.get(f"{url}/#timeseries")
    cards = wait_for(driver, "card-view .tag", lambda t: len(t) >= 4, "the Time Series cards")
    assert set(cards[:2]) == {tags.LOSS, tags.ACC}, cards[:6]
    # train and validation of every run on the same chart
    legend = wait_for(
        driver,
        "card-view",
        lambda t: t and "tb/validation" in t[0] and "tb/train" in t[0],
        "train and validation in the first card",
    )
    assert "lone/tb/train" in legend[0] or "lone/tb/validation" in legend[0]
    screenshot(driver, "time-series", root)


def test_hparams_lists_the_swept_hyperparameter_first(page):
    driver, url, root = page
    driver.get(f"{url}/#hparams")
    cells = wait_for(
        driver,
        "vaadin-grid-cell-content",
        lambda t: "optim.lr" in t and any(" · " in c for c in t),
        "the HParams table",
    )
    header = cells[: cells.index("optim.lr") + 1]
    assert header[-1] == "optim.lr" and "model" not in header  # the differing one first
    assert f"{tags.TRAIN_RUN}.{tags.LOSS}" in cells and f"{tags.VAL_RUN}.{tags.LOSS}" in cells
    # the trials are named by their folders, what tells them apart first
    trials = sorted(c for c in cells if " · " in c)
    assert trials == ["0_optim.lr=0.05 · multirun", "1_optim.lr=0.1 · multirun", "lone · runs"]
    screenshot(driver, "hparams", root)


def test_images_show_the_inside(page):
    driver, url, root = page
    driver.get(f"{url}/#images")
    pictures = [
        tags.ACTIVATIONS.format(layer="01_conv1"),
        tags.ACTIVATIONS.format(layer="04_conv2"),
        tags.FILTERS.format(layer="01_conv1"),
        tags.CONFUSION,
    ]  # the saliency sorts last, on the tab's second page: test_runner reads it back
    wait_for(
        driver,
        "tf-image-loader",
        lambda shown: all(any(tag in s for s in shown) for tag in pictures),
        f"the pictures {pictures}",
    )
    screenshot(driver, "images", root)


def test_graphs_show_the_model(page):
    driver, url, _ = page
    driver.get(f"{url}/#graphs")
    labels = wait_for(driver, "g.node text", lambda t: len(t) >= 5, "the graph's nodes")
    for node in ("input", "conv1", "conv2", "fc1", "fc3", "loss"):
        assert any(node in label for label in labels), (node, labels)
