"""Process-wide settings: a kernel lookup changes nothing; :func:`configure_process` sets
thread pools from its arguments alone, whatever ran before it in the process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnrun.backends import ProcessSettings, configure_process, gemm
from cnnrun.errors import ConfigError

SETTINGS = """
import json, numba, threadpoolctl
def now():
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    from cnnrun.backends import gemm
    return {"blas": blas, "numba": numba.get_num_threads(), "gemm": gemm.workers()}
"""


def _in_fresh_process(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SETTINGS + code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_looking_up_the_numba_backend_changes_no_thread_pool():
    """It used to pin BLAS to one thread for the rest of the process, so a later numpy run
    computed with other numbers than the same run on its own."""
    seen = _in_fresh_process(
        "from cnnrun.backends import get_backend\n"
        "before = now()\n"
        "get_backend('numba')\n"
        "print(json.dumps({'before': before, 'after': now()}))\n"
    )
    assert seen["before"]["blas"], "no BLAS library found"
    assert seen["after"] == seen["before"]


def test_settings_depend_only_on_the_arguments():
    seen = _in_fresh_process(
        "from cnnrun.backends import configure_process\n"
        "configure_process(2, 'numpy'); first = now()\n"
        "configure_process(2, 'numba'); numba_run = now()\n"
        "configure_process(2, 'numpy'); again = now()\n"
        "print(json.dumps({'first': first, 'numba': numba_run, 'again': again}))\n"
    )
    assert set(seen["numba"]["blas"]) == {1}  # BLAS always keeps one thread: its results
    assert set(seen["first"]["blas"]) == {1}  # depend on its thread count
    assert seen["again"] == seen["first"]
    assert seen["first"]["gemm"] == seen["numba"]["gemm"] == 2  # the products' blocks


def test_configure_process_reports_what_it_set():
    import numba

    try:
        settings = configure_process(1, "numba")
        # the allocator and whether numba's cache is warm are the machine's, not the call's:
        # on a fresh clone the first numba run carries the compile notice
        note = settings.compile_note
        assert note == "" or note.startswith("compiling the numba kernels once")
        small = gemm.SMALL_WORK if gemm.blas_small_kernel() else None
        assert settings.small_products == small == gemm.small_products()
        expected = ProcessSettings(
            1, 1, 1, 1, settings.freed_memory_kept, compile_note=note, small_products=small
        )
        assert settings == expected
        assert (f"BLAS calls of <= {gemm.SMALL_WORK:,} multiply-adds" in str(settings)) == bool(
            small
        )
        assert numba.get_num_threads() == 1
        assert str(settings).startswith("threads 1 (gemm blocks 1, BLAS 1, numba 1)")
        whole = configure_process(None, "numpy")
        assert whole.threads >= 1 and whole.gemm_workers == whole.threads
        assert whole.blas_threads == 1 and gemm.workers() == whole.threads
    finally:
        configure_process(None, "numpy")


@pytest.mark.parametrize("bad", [-2, 1.5, True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ConfigError, match="backend.threads"):
        configure_process(bad)
