"""A run folder opens in TensorBoard itself: the server, started on 127.0.0.1 by the test and
always stopped by it, lists the run's tags through its HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from browser import HOST, free_port, get_json
from runner_helpers import LENET_PARAMS, LENET_PLACES, TRAIN_TAGS, run_config

from cnnrun.run import logger as tags
from cnnrun.run.train import train

STARTUP_S = 60


@pytest.fixture
def tensorboard(tmp_path):
    """A tiny run, and TensorBoard serving its folder: yields (port, run folder)."""
    out = tmp_path / "run"
    train(run_config(out))
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(out),
            "--host",
            HOST,
            "--port",
            str(port),
            "--load_fast=false",
            "--reload_interval",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield server, port, out
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        server.stderr.close()


def wait_for_scalar_tags(server, port: int) -> dict:
    """Poll until the server answers and has loaded the run (at most STARTUP_S seconds)."""
    deadline = time.monotonic() + STARTUP_S
    last = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tensorboard exited with {server.returncode}: {server.stderr.read()}")
        try:
            listed = get_json(port, "/data/plugin/scalars/tags")
            if len(listed) == 3:
                return listed
            last = listed
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last = err
        time.sleep(0.25)
    pytest.fail(f"tensorboard did not list the run within {STARTUP_S} s: {last!r}")


@pytest.mark.slow  # a TensorBoard server
def test_tensorboard_serves_the_run(tensorboard):
    server, port, out = tensorboard
    listed = wait_for_scalar_tags(server, port)
    # three runs: the run itself, and its train and validation curves side by side
    assert set(listed) == {"tb", "tb/train", "tb/validation"}
    assert set(TRAIN_TAGS) <= set(listed["tb/train"])
    assert set(listed["tb/validation"]) == {tags.LOSS, tags.ACC}
    named = {p: f"{place}_{p}" for p, place in zip(LENET_PARAMS, LENET_PLACES)}
    expected = {tags.GRAD_NORM.format(param=named[p]) for p in LENET_PARAMS}
    assert expected <= set(listed["tb"]), expected - set(listed["tb"])
    # the values come back through the API too
    query = f"/data/plugin/scalars/scalars?run=tb/train&tag={tags.STEP_LOSS}"
    points = get_json(port, query)
    assert [step for _, step, _ in points] == [0, 1, 2]
    assert all(0 < value < 10 for _, _, value in points)
    metrics = json.loads((out / "metrics.json").read_text())
    (val,) = get_json(port, f"/data/plugin/scalars/scalars?run=tb/validation&tag={tags.LOSS}")
    assert val[1] == 2 and val[2] == pytest.approx(metrics["val/loss"], rel=1e-6)
