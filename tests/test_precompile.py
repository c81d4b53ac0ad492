"""The first compile shared with a second process (cnnrun.backends.numba.precompile): with an
empty cache the dW kernels come from the child's compile, with the same bits; a warm cache
starts no child; a child that fails or hangs leaves the process to compile them itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cnnrun.backends.numba import precompile

# a conv forward (which looks at the cache), then dW by both kernels on fixed data
_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    from cnnrun.backends import get_backend
    from cnnrun.backends.numba import precompile, wide_grad

    numba = get_backend("numba")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 3, 11, 7)).astype(np.float32)
    # the micro-kernel's blocks; the few-filters dot products, at any register width (AVX2's
    # 8 float32 lanes take 6 filters in blocks); the layers' forward passes first, as in a step
    layers = (16, 2) if sys.argv[1] == "both" else (16,)
    for filters in layers:
        numba.conv2d_forward(numba.pad2d(x, (1, 1, 1, 1)), np.ones((filters, 3, 3, 3), np.float32),
                             (1, 1), (1, 1))
    digests = []
    for filters in layers:
        dy = rng.standard_normal((9, filters, 9, 5)).astype(np.float32)
        dW = numba.conv2d_grad_weight(x, None, dy, (3, 3), (1, 1), (1, 1))
        digests.append(hashlib.sha256(dW.tobytes()).hexdigest())
    stats = {
        name: [sum(getattr(wide_grad, name).stats.cache_hits.values()),
               sum(getattr(wide_grad, name).stats.cache_misses.values())]
        for name in ("_grad_weight_blocks", "_grad_weight_few")[: len(layers)]
    }
    child = precompile._children.get(np.dtype("float32"))
    said = [] if child is None else (child.proc.wait(60), child.done["few"].wait(60), child.said)[2]
    print(json.dumps({"child": precompile.started("float32"), "stats": stats,
                      "digests": digests, "said": said}))
    """
)


def _run(cache, layers="both", **env) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, layers],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not precompile.enabled(), reason="one core: no second process to share")
def test_an_empty_cache_gets_dw_kernels_from_the_child_with_the_same_bits(tmp_path):
    cold = _run(tmp_path / "shared")
    assert cold["child"] is True
    # both kernels loaded from the cache the child wrote: none compiled here
    assert cold["stats"] == {"_grad_weight_blocks": [1, 0], "_grad_weight_few": [1, 0]}
    assert cold["said"] == ["start blocks", "done blocks", "start few", "done few"]
    alone = _run(tmp_path / "alone", CNNRUN_PRECOMPILE="0")
    assert alone["child"] is False
    assert alone["stats"] == {"_grad_weight_blocks": [0, 1], "_grad_weight_few": [0, 1]}
    assert cold["digests"] == alone["digests"]  # one compiler, one source: the same bits
    warm = _run(tmp_path / "shared")
    assert warm["child"] is False  # the probe found the cache: no second process
    assert warm["stats"] == cold["stats"] and warm["digests"] == cold["digests"]


@pytest.mark.slow
@pytest.mark.skipif(not precompile.enabled(), reason="one core: no second process to share")
def test_a_model_without_few_filters_gets_the_blocks_alone(tmp_path):
    cold = _run(tmp_path, "blocks")
    assert cold["stats"] == {"_grad_weight_blocks": [1, 0]}
    assert cold["said"] == ["start blocks", "done blocks"]  # the few-filters kernel: not asked


def _child(monkeypatch, code: str, wait_s: float = 60.0) -> precompile._Child:
    monkeypatch.setattr(precompile, "WAIT_S", wait_s)
    child = precompile._Child("float32", [sys.executable, "-c", code])
    monkeypatch.setitem(precompile._children, np.dtype("float32"), child)
    return child


def test_a_child_that_fails_leaves_the_kernels_to_this_process(monkeypatch):
    child = _child(monkeypatch, "import sys; print('start blocks', flush=True); sys.exit(3)")
    assert child.proc.wait() == 3
    start = time.perf_counter()
    precompile.ready("blocks", "float32")  # begun, never done: its end is the word
    precompile.ready("few", "float32")
    assert time.perf_counter() - start < 30
    assert child.done["blocks"].is_set() and child.done["few"].is_set()


def test_a_job_begun_is_waited_for_up_to_wait_s_one_not_begun_not_at_all(monkeypatch):
    said = "start blocks", "done blocks", "start few"
    code = f"import time; print({chr(10).join(said)!r}, flush=True); time.sleep(60)"
    child = _child(monkeypatch, code, 0.5)
    assert child.begun["few"].wait(30)
    start = time.perf_counter()
    precompile.ready("blocks", "float32")  # done: at once
    assert time.perf_counter() - start < 0.4
    precompile.ready("few", "float32")  # begun, never done: WAIT_S
    assert 0.4 < time.perf_counter() - start < 30
    child.stop()  # as at exit
    assert child.proc.wait(30) != 0


def test_a_job_the_child_has_not_begun_is_compiled_here_at_once(monkeypatch):
    child = _child(monkeypatch, "import time; time.sleep(60)")  # still starting, say
    start = time.perf_counter()
    precompile.ready("blocks", "float32")
    precompile.ready("blocks", "float64")  # the child compiles float32's kernels
    assert time.perf_counter() - start < 5
    child.stop()


def test_the_child_is_off_with_the_variable_one_core_or_one_thread(monkeypatch):
    from cnnrun.backends import process

    monkeypatch.setattr(process, "kernel_threads", lambda: None)
    monkeypatch.setattr(process, "machine_cores", lambda: 2)
    assert precompile.enabled()
    monkeypatch.setenv("CNNRUN_PRECOMPILE", "0")
    assert not precompile.enabled()
    monkeypatch.delenv("CNNRUN_PRECOMPILE")
    monkeypatch.setattr(process, "machine_cores", lambda: 1)
    assert not precompile.enabled()
    monkeypatch.setattr(process, "machine_cores", lambda: 2)
    monkeypatch.setattr(process, "kernel_threads", lambda: 1)  # backend.threads=1
    assert not precompile.enabled()
    monkeypatch.setattr(process, "kernel_threads", lambda: 2)
    assert precompile.enabled()


def test_a_child_that_imports_another_cnnrun_compiles_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", precompile._CHILD, precompile._ROOT, "float32", "/x/wide_grad.py"],
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0 and "not the parent's /x/wide_grad.py" in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_the_child_stops_at_the_end_of_a_job_not_inside_it(monkeypatch, tmp_path):
    """A SIGTERM (at the parent's exit) or a Ctrl-C while it compiles waits for the job's end:
    a kill between Numba's writes of an entry's index and data could leave a stale entry."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # empty: the job compiles for seconds
    child = precompile._Child("float32")
    assert child.begun["blocks"].wait(120)
    child.stop()
    assert child.proc.wait(120) != 0
    assert child.done["few"].wait(30)  # the reader has read everything
    assert child.said == ["start blocks", "done blocks"]  # finished, and no job after it
    assert list(tmp_path.rglob("*_grad_weight_blocks*.nbc"))


def test_a_forked_process_shares_none_of_the_parents_child(monkeypatch):
    child = _child(monkeypatch, "import time; time.sleep(60)")
    monkeypatch.setattr(precompile, "_probed", {np.dtype("float32")})
    pid = os.fork()
    if pid == 0:  # its dW must not wait on a child whose words only the parent reads
        os._exit(0 if not precompile._children and not precompile._probed else 1)
    _, status = os.waitpid(pid, 0)
    child.stop()
    assert os.waitstatus_to_exitcode(status) == 0
