"""The package's layout keeps its promises: the engine imports no runner library, the runner is
the only code that does, and no module or function outgrows a screen or two."""

from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnnrun"
ENGINE = ["cnnrun.nn", "cnnrun.optim", "cnnrun.backends", "cnnrun.trace", "cnnrun.gradcheck"]
ENGINE += ["cnnrun.models", "cnnrun.data", "cnnrun.errors"]
RUNNER_ONLY = ("hydra", "omegaconf", "tensorboardX", "tensorboard", "tqdm")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imported(tree: ast.AST) -> set[str]:
    """Top-level names of every module imported anywhere in the file (functions included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_importing_the_engine_loads_no_runner_library():
    """In a fresh interpreter: the engine's modules pull in neither Hydra, OmegaConf,
    TensorBoard, tqdm nor anything of cnnrun.run."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {ENGINE!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    bad = [m for m in loaded if m.split(".")[0] in RUNNER_ONLY or m.startswith("cnnrun.run")]
    assert not bad, bad


def test_only_the_runner_imports_hydra_tensorboard_and_tqdm():
    offenders = {}
    for path in _sources():
        rel = path.relative_to(PACKAGE.parent)
        if rel.parts[1] == "run":
            continue
        found = _imported(ast.parse(path.read_text())) & set(RUNNER_ONLY) - {"omegaconf"}
        if found:
            offenders[str(rel)] = sorted(found)
    assert not offenders, offenders


def test_the_engine_imports_nothing_from_the_runner():
    offenders = []
    for path in _sources():
        rel = path.relative_to(PACKAGE.parent)
        if (
            rel.parts[1] in ("run", "bench", "__main__.py", "shapes.py")
            or rel.name == "__main__.py"
        ):
            continue  # entry points and the benchmark sit on top of the runner
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                absolute = node.level == 0 and node.module.startswith("cnnrun.run")
                relative = node.level > 0 and node.module.split(".")[0] == "run"
                if absolute or relative:
                    offenders.append(str(rel))
    assert not offenders, offenders


def test_no_module_outgrows_its_concern():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def _compiled(node: ast.AST) -> bool:
    """A Numba kernel: its loops are the arithmetic, and splitting them costs speed."""
    for d in getattr(node, "decorator_list", []):
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ("njit", "jit", "vectorize", "guvectorize"):
            return True
    return False


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_outgrows_a_screen(path):
    tree = ast.parse(path.read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and not _compiled(node)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_every_package_is_in_the_wheel():
    """A sub-package missing from pyproject's list installs without its files (the editable
    install of the tests would not notice)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {
        ".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")
    }
    assert found - listed == set(), found - listed


def test_every_data_file_is_in_the_wheel():
    """A file the package reads (the digits' copy, the configs) that pyproject's package-data
    does not name installs without it; the editable install of the tests would not notice."""
    tomllib = pytest.importorskip("tomllib")

    setuptools = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    patterns = setuptools["package-data"]
    skipped = {".py", ".nbi", ".nbc", ".pyc"}
    unlisted = []
    for path in PACKAGE.rglob("*"):
        if not path.is_file() or path.suffix in skipped or "__pycache__" in path.parts:
            continue
        package = ".".join(path.parent.relative_to(PACKAGE.parent).parts)
        globs = patterns.get("*", []) + patterns.get(package, [])
        if not any(fnmatch.fnmatch(path.name, glob) for glob in globs):
            unlisted.append(str(path.relative_to(PACKAGE.parent)))
    assert unlisted == [], unlisted
