"""Bad input as a user meets it: ``python -m cnnrun ...`` in a subprocess ends with one line
``cnnrun: error: ...`` naming the value (and what is accepted), exit status 2, no traceback,
and every file that was already there unchanged. Also the ``shapes`` and ``gradcheck``
commands."""

from __future__ import annotations

import shutil

import pytest
from runner_helpers import TINY, last_line, run_cnnrun, run_config, sha256, snapshot

from cnnrun.train import train


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory):
    """A real checkpoint of the tiny lenet run (12x12 synthetic images, 'same' padding)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(run_config(out))
    return out / "checkpoints" / "last.npz"


def assert_one_line_error(result, *names: str) -> str:
    """Exit status 2, the last line of stderr ``cnnrun: error: ...`` holding every one of
    ``names``, and no traceback on either stream; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = last_line(result.stderr)
    assert line.startswith("cnnrun: error: "), result.stderr
    for name in names:
        assert name in line, (name, line)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return line


BAD_CONFIGS = {
    "unknown-model": (["model=resnet"], ["unknown model 'resnet'", "lenet, mlp, vgg_small"]),
    "padding": (["conv.padding=smae"], ["conv.padding", "'smae'", "same, valid, full"]),
    "backend": (["backend=tpu"], ["backend", "'tpu'", "numba, numpy"]),
    "negative-lr": (["optim.lr=-0.1"], ["optim.lr", "-0.1", "> 0"]),
    "zero-batch": (["data.batch_size=0"], ["data.batch_size", "0", ">= 1"]),
    "optim-schedule": (["optim.schedule=linear"], ["optim.schedule", "'linear'",
                                                   "none, step, cosine"]),
    # lenet under the default 'valid' padding: 8 -> conv1 -> 4 -> pool -> 2, below conv2's 5x5
    "image-below-kernel": (["data=synthetic", "data.image_size=8"],
                           ["lenet", "conv2", "1x8x8", "2x2", "5x5"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line(tmp_path, case):
    args, names = BAD_CONFIGS[case]
    (tmp_path / "keep.txt").write_text("written before the run\n")
    before = snapshot(tmp_path)
    result = run_cnnrun([*args, "trainer.max_epochs=1"], cwd=tmp_path)
    assert_one_line_error(result, *names)
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before
    # no checkpoint came of it
    assert not list(tmp_path.rglob("*.npz"))


def test_missing_data_files_named_with_folder(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    result = run_cnnrun(["data=mnist", f"data.root={empty}", "trainer.max_epochs=1"],
                        cwd=tmp_path)
    assert_one_line_error(result, "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(empty))
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("model, kind", [
    ("lenet", "missing"),        # no file at that path
    ("lenet", "text"),           # a text file, not an .npz
    ("lenet", "truncated"),      # the first part of a real checkpoint
    ("mlp", "other-model"),      # a real lenet checkpoint, resumed by the mlp
])
def test_bad_checkpoint_is_one_line_and_untouched(tmp_path, lenet_checkpoint, model, kind):
    folder = tmp_path / "given"
    folder.mkdir()
    path = folder / f"{kind}.npz"
    if kind == "text":
        path = folder / "notes.txt"
        path.write_text("not a checkpoint\n")
    elif kind == "truncated":
        data = lenet_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "other-model":
        shutil.copyfile(lenet_checkpoint, path)
    source = sha256(lenet_checkpoint)
    before = snapshot(tmp_path)
    result = run_cnnrun([*TINY, f"model={model}", f"trainer.resume={path}"], cwd=tmp_path)
    line = assert_one_line_error(result, str(path))
    if kind == "missing":
        assert "not found" in line
    elif kind in ("text", "truncated"):
        assert "unreadable" in line or "not a cnnrun checkpoint" in line
    else:   # names the parameters and shapes that do not fit
        for name in ("'lenet'", "conv1.weight", "conv2.weight", "fc1.weight", "(120, 144)",
                     "(256, 144)"):
            assert name in line, (name, line)
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before          # byte for byte
    assert sha256(lenet_checkpoint) == source
    assert not path.exists() if kind == "missing" else path.is_file()
    # the failed run did not train: no checkpoint written next to the bad one or anywhere else
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.npz")) == (
        [] if kind in ("missing", "text") else [str(path.relative_to(tmp_path))])


@pytest.mark.parametrize("args, where", [
    (["conv.padding=smae"], "composing"),      # refused by the schema, before any run
    (["optim.lr=-0.1"], "train"),              # refused by train(cfg), inside the Hydra task
])
def test_hydra_full_error_shows_the_traceback(tmp_path, args, where):
    result = run_cnnrun([*args, "trainer.max_epochs=1"], cwd=tmp_path,
                        env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr, (where, result.stderr)
    bad = args[0].split("=", 1)[1]
    assert bad in result.stderr


# -- python -m cnnrun.shapes and python -m cnnrun.gradcheck ---------------------------------

def test_shapes_prints_the_design_example(tmp_path):
    result = run_cnnrun(["model=lenet", "conv.padding=same", "data.batch_size=64"],
                        cwd=tmp_path, module="cnnrun.shapes")
    assert result.returncode == 0, result.stderr
    lines = [ln.strip() for ln in result.stdout.splitlines()]
    assert "dW = corr_valid(x_pad (64,1,36,36), dY (64,6,32,32)) -> (6,1,5,5)" in lines
    assert ("dX = conv_full(dY (64,6,32,32), W (6,1,5,5)) -> (64,1,36,36), "
            "cropped to (64,1,32,32)") in lines
    # conv2 after the first 2x2 pool: 16x16 maps padded to 20x20
    assert "dW = corr_valid(x_pad (64,6,20,20), dY (64,16,16,16)) -> (16,6,5,5)" in lines
    # a row per layer, in order
    names = [ln.split()[0] for ln in result.stdout.splitlines()
             if ln and not ln.startswith((" ", "#"))]
    assert names == ["conv1", "1", "2", "conv2", "4", "5", "6", "fc1", "8", "fc2", "10", "fc3"]
    assert not (tmp_path / "runs").exists()        # it only looks: no run folder


def test_shapes_valid_padding_changes_the_shapes(tmp_path):
    result = run_cnnrun(["model=lenet", "conv.padding=valid", "data.batch_size=8"],
                        cwd=tmp_path, module="cnnrun.shapes")
    assert result.returncode == 0, result.stderr
    lines = [ln.strip() for ln in result.stdout.splitlines()]
    assert "dW = corr_valid(x_pad (8,1,32,32), dY (8,6,28,28)) -> (6,1,5,5)" in lines
    assert any(ln.startswith("dX = conv_full(dY (8,6,28,28), W (6,1,5,5)) -> (8,1,32,32)")
               for ln in lines), result.stdout


def test_shapes_bad_input_is_one_line(tmp_path):
    result = run_cnnrun(["model=lenet", "data=synthetic", "data.image_size=8"], cwd=tmp_path,
                        module="cnnrun.shapes")
    assert_one_line_error(result, "conv2", "1x8x8", "5x5")


def test_gradcheck_lenet_passes_with_a_row_per_layer(tmp_path):
    result = run_cnnrun(["model=lenet"], cwd=tmp_path, module="cnnrun.gradcheck")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {ln.split()[0]: ln.split() for ln in result.stdout.splitlines() if ln.strip()}
    for layer in ("conv1", "conv2", "fc1", "fc2", "fc3", "input"):
        assert layer in rows, result.stdout
        error = float(rows[layer][1])
        assert 0 <= error < 1e-6, rows[layer]
        assert int(rows[layer][2]) > 0                 # elements checked
    assert last_line(result.stdout).startswith("ok: largest relative error")
