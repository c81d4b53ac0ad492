"""Experiments that hold up: three splits, validation decides and test reports, augmentation
that repeats bit for bit, and sweeps over seeds summarised per setting.

The official test files used to be the validation split: val/acc was the test accuracy,
best.npz was chosen on the test loss and an Optuna search tuned on the test set.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import statistics

import numpy as np
import pytest
from runner_helpers import arrays, assert_same_arrays, last_line, run_cnnrun, run_config
from test_data import IDX_NAMES, fake_cifar, fake_mnist, idx_bytes, write_file

from cnnrun.data import load_data
from cnnrun.data.augment import random_crop_flip
from cnnrun.errors import DataError
from cnnrun.run import seeds
from cnnrun.run.signals import Interrupted
from cnnrun.run.train import Trainer, train


def rows_of(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


# -- three splits -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", ["mnist", "cifar10", pytest.param("digits", marks=pytest.mark.slow), "synthetic"]
)
def test_three_disjoint_stratified_splits_that_follow_the_seed(tmp_path, kind):
    if kind == "mnist":
        fake_mnist(tmp_path / "mnist", gz=False, n_train=200, n_val=30)
    elif kind == "cifar10":
        fake_cifar(tmp_path / "cifar-10-batches-py", n=40)
    args = {"root": tmp_path, "verify_checksums": False, "val_fraction": 0.2}
    if kind == "synthetic":
        args.update(num_samples=400, image_size=12)
    a, b, c = (load_data(kind, seed=s, **args) for s in (0, 0, 1))
    splits = [rows_of(x) for x in (a.x_train, a.x_val, a.x_test)]
    assert all(len(s) > 0 for s in splits)
    duplicates = sum(len(s) for s in splits) - len(set.union(*splits))
    assert duplicates <= (5 if kind == "digits" else 0)  # digits has a few identical images
    train, val = np.bincount(a.y_train, minlength=10), np.bincount(a.y_val, minlength=10)
    assert np.all(np.abs(val - 0.2 * (train + val)) < 1.0)  # stratified: each class 20%
    np.testing.assert_array_equal(a.y_val, b.y_val)  # the same seed, the same splits
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_val, c.y_val)  # another seed, another validation split


def test_val_fraction_is_used_for_the_data_sets_with_test_files(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=False, n_train=100, n_val=10)
    for fraction, n_val in ((0.1, 10), (0.3, 30)):
        data = load_data("mnist", root=tmp_path, verify_checksums=False, val_fraction=fraction)
        assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (100 - n_val, n_val, 10)


def test_a_class_of_one_image_keeps_it_where_the_others_can_give_instead():
    from cnnrun.data.splits import stratified_split

    y = np.array([0] * 50 + [1])
    train, val = stratified_split(y, 0.5, np.random.default_rng(0))
    assert len(val) == 26 and 50 in train  # all 26 from class 0, class 1 keeps its image


def test_a_fraction_that_leaves_a_class_without_training_images_is_named(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=False, n_train=20, n_val=3)  # 2 images a class
    with pytest.raises(DataError, match=r"data.val_fraction=0.6 leaves class \d without"):
        load_data("mnist", root=tmp_path, verify_checksums=False, val_fraction=0.6)
    fake_mnist(tmp_path / "one", gz=False, n_train=1, n_val=3)  # no image left to validate on
    with pytest.raises(DataError, match=r"data.val_fraction=0.2: 1 image\(s\) cannot be split"):
        load_data("mnist", root=tmp_path / "one", verify_checksums=False, val_fraction=0.2)


@pytest.mark.slow  # a `python -m cnnrun` process
def test_a_bad_fraction_on_the_command_line_is_one_line(tmp_path):
    result = run_cnnrun(
        ["data=synthetic", "data.num_samples=8", "data.val_fraction=0.9", "hydra.run.dir=r"],
        tmp_path,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = last_line(result.stderr)
    assert line.startswith("cnnrun: error: data.val_fraction=0.9 leaves class"), line


# -- validation decides, test reports ---------------------------------------------------------
def mnist_run(tmp_path, name: str, test_label: int | None) -> dict:
    """A short MLP run on IDX files the test writes; ``test_label`` plants a test split whose
    labels are all that one class."""
    root = tmp_path / name
    arrays_written = fake_mnist(root / "mnist", gz=False, n_train=120, n_val=40, size=(6, 6))
    if test_label is not None:
        labels = np.full(len(arrays_written["val_y"]), test_label, dtype=np.uint8)
        write_file(root / "mnist" / IDX_NAMES["val_y"], idx_bytes(labels), gz=False)
    out = root / "run"
    train(
        run_config(
            out,
            [
                "model=mlp",
                "data=mnist",
                f"data.root={root}",
                "data.image_size=6",
                "data.verify_checksums=false",
                "data.batch_size=16",
                "trainer.max_epochs=3",
            ],
        )
    )
    return {
        "metrics": json.loads((out / "metrics.json").read_text()),
        "best": arrays(out / "checkpoints" / "best.npz"),
        "last": arrays(out / "checkpoints" / "last.npz"),
    }


@pytest.mark.slow  # two 3-epoch runs
def test_the_test_split_chooses_nothing(tmp_path):
    """Test labels all one class, or all another: nothing but the test figures moves."""
    a, b = mnist_run(tmp_path, "a", test_label=0), mnist_run(tmp_path, "b", test_label=7)
    for key in ("val/loss", "val/acc", "val/best_loss", "train/loss", "step"):
        assert a["metrics"][key] == b["metrics"][key], key
    assert_same_arrays(a["best"], b["best"])
    assert_same_arrays(a["last"], b["last"])
    assert a["metrics"]["test/acc"] != b["metrics"]["test/acc"]
    for m in (a["metrics"], b["metrics"]):
        assert {"test/loss", "test/acc", "test/loss_last", "test/acc_last"} <= set(m)


def test_test_figures_come_from_best_and_from_last(tmp_path):
    from cnnrun.run import checkpoint as ckpt
    from cnnrun.run.build import build_run_model, load_run_data
    from cnnrun.run.step import evaluate

    out = tmp_path / "run"
    cfg = run_config(out, ["trainer.max_epochs=3", "data.num_samples=256"])
    train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    data = load_run_data(cfg)
    model = build_run_model(cfg, (1, 12, 12), np.random.default_rng(0))
    from cnnrun import nn

    for name, suffix in (("best.npz", ""), ("last.npz", "_last")):
        model.load_state_dict(ckpt.load_checkpoint(out / "checkpoints" / name)["model"])
        loss, acc = evaluate(model, nn.CrossEntropyLoss(), data.x_test, data.y_test, 16, None)
        assert (metrics[f"test/loss{suffix}"], metrics[f"test/acc{suffix}"]) == (loss, acc)


@pytest.mark.slow  # three runs
def test_a_run_resumed_into_a_new_folder_reports_the_best_checkpoints_test_figures(tmp_path):
    """Its folder had no best.npz, so the 'best' test figures were the last weights'."""
    schedule = ["optim.schedule=none"]  # epochs 2 and 3 validate worse than epoch 1
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    train(run_config(straight, [*schedule, "trainer.max_epochs=3"]))
    train(run_config(first, [*schedule, "trainer.max_epochs=1"]))
    last = first / "checkpoints" / "last.npz"
    train(run_config(second, [*schedule, "trainer.max_epochs=3", f"trainer.resume={last}"]))
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((second / "metrics.json").read_text())
    assert a["val/best_loss"] < a["val/loss"]  # the best epoch is one the resumed run never saw
    for key in ("test/loss", "test/acc", "test/loss_last", "test/acc_last"):
        assert a[key] == b[key], key


def test_a_checkpoint_from_before_the_three_splits_is_refused_saying_why(tmp_path):
    from cnnrun.errors import CheckpointError

    out = tmp_path / "run"
    train(run_config(out))
    with np.load(out / "checkpoints" / "last.npz", allow_pickle=False) as data:
        items = {k: data[k] for k in data.files}
    meta = json.loads(str(items["meta"]))
    meta["config"] = re.sub(r"\n *test_fraction: [^\n]*", "", meta["config"])
    meta["version"] = 1  # no hashes to redo: an old checkpoint
    items["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **items)
    with pytest.raises(CheckpointError, match="before the three splits"):
        train(run_config(tmp_path / "again", [f"trainer.resume={old}"]))


# -- augmentation -------------------------------------------------------------------------------
def test_random_crop_flip_crops_the_padded_image_and_flips_half(rng):
    x = rng.standard_normal((400, 2, 5, 7)).astype(np.float32)
    out = random_crop_flip(x, np.random.default_rng(1))
    again = random_crop_flip(x, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)  # from the stream given, nothing else
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    flips = 0
    for i in range(len(x)):
        found = [
            flip
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                out[i],
                padded[i, :, dy : dy + 5, dx : dx + 7][:, :, ::-1]
                if flip
                else padded[i, :, dy : dy + 5, dx : dx + 7],
            )
        ]
        assert found, i
        flips += found[0]
    assert 150 < flips < 250  # about half


def test_augmentation_touches_training_batches_only(tmp_path, monkeypatch):
    import cnnrun.run.train as train_module

    seen = []
    real = train_module.random_crop_flip

    def counting(x, rng):
        seen.append(len(x))
        return real(x, rng)

    monkeypatch.setattr(train_module, "random_crop_flip", counting)
    out = tmp_path / "run"
    train(run_config(out, ["trainer.max_epochs=2", "data.augment=true"]))
    data = load_data(
        "synthetic", num_samples=64, image_size=12, val_fraction=0.25, num_classes=4, seed=0
    )
    assert sum(seen) == 2 * len(data.y_train)  # every training image each epoch, nothing else
    plain = tmp_path / "plain"
    train(run_config(plain, ["trainer.max_epochs=2"]))
    a, b = arrays(out / "checkpoints" / "last.npz"), arrays(plain / "checkpoints" / "last.npz")
    assert not np.array_equal(a["model/conv1.weight"], b["model/conv1.weight"])


def test_an_augmented_run_resumed_mid_epoch_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    schedule = ["trainer.max_epochs=3", "data.augment=true", "data.num_samples=128"]
    straight = tmp_path / "straight"
    train(run_config(straight, schedule))
    out = tmp_path / "interrupted"
    real_step = Trainer._train_step

    def step_then_signal(self, *args):
        real_step(self, *args)
        if self.state.step == 8:  # mid-epoch 2
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_train_step", step_then_signal)
    with pytest.raises(Interrupted):
        train(run_config(out, schedule))
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    train(run_config(out, [*schedule, "trainer.resume=last"]))
    assert_same_arrays(
        arrays(out / "checkpoints" / "last.npz"), arrays(straight / "checkpoints" / "last.npz")
    )
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((straight / "metrics.json").read_text())
    for key in ("test/loss", "test/acc", "test/loss_last", "test/acc_last", "val/loss"):
        assert a[key] == b[key], key


# -- sweeps over seeds --------------------------------------------------------------------------
def test_jobs_that_differ_only_in_their_seed_are_one_setting():
    def row(lr, seed, loss, acc, test, status="ok"):
        return {
            "overrides": f"trainer.max_epochs=2 optim.lr={lr} seed={seed}",
            "status": status,
            "val/loss": loss,
            "val/acc": acc,
            "test/acc": test,
        }

    rows = [
        row(0.1, 0, 0.5, 0.8, 0.7),
        row(0.1, 1, 0.7, 0.6, 0.6),
        row(0.1, 2, 0.6, 0.7, 0.8),
        row(0.2, 0, 0.4, 0.9, 0.9),
        row(0.2, 1, 0.3, 0.95, 0.85),
        row(0.2, 2, math.nan, "", "", status="failed"),
    ]
    assert seeds.varies_seed(rows)
    first, second = seeds.by_setting(rows)
    assert first["setting"] == "optim.lr=0.2 trainer.max_epochs=2"  # best mean val/loss first
    assert (first["seeds"], first["failed"]) == (2, 1)
    assert first["val/loss mean"] == pytest.approx(0.35)
    assert first["val/loss std"] == pytest.approx(statistics.stdev([0.4, 0.3]))
    assert (second["seeds"], second["failed"]) == (3, 0)
    assert second["val/acc mean"] == pytest.approx(0.7)
    assert second["test/acc std"] == pytest.approx(0.1)
    table = seeds.to_table([first, second])
    assert "0.3500 ± 0.0707" in table and "optim.lr=0.2" in table and "max_epochs" not in table
    assert not seeds.varies_seed([row(0.1, 0, 1, 1, 1), row(0.2, 0, 1, 1, 1)])
    # the same seed twice (an Optuna search may propose it again) is one seed; the order of
    # the overrides and a leading + do not make another setting
    again = {**row(0.2, 1, 0.9, 0.1, 0.1), "overrides": "+seed=1 optim.lr=0.2 trainer.max_epochs=2"}
    first_again = seeds.by_setting([*rows, again])[0]
    assert (first_again["seeds"], first_again["val/loss mean"]) == (2, pytest.approx(0.35))
    assert not seeds.varies_seed(
        [row(0.1, 0, 1, 1, 1), {**row(0.1, 0, 1, 1, 1), "overrides": "+seed=0"}]
    )


@pytest.mark.slow  # a 6-job sweep
def test_a_sweep_over_seeds_writes_the_table_by_setting(tmp_path):
    from runner_helpers import TINY

    sweep = tmp_path / "sweep"
    done = run_cnnrun(
        ["-m", *TINY, "optim.lr=0.05,0.2", "seed=0,1,2", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "per setting, over its seeds" in done.stdout
    with open(sweep / "summary_by_setting.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and {r["seeds"] for r in table} == {"3"}
    for r in table:
        lr = r["setting"].split("optim.lr=")[1].split()[0]
        jobs = [j for j in sweep.glob(f"*optim.lr={lr}*") if (j / "metrics.json").is_file()]
        losses = [json.loads((j / "metrics.json").read_text())["val/loss"] for j in jobs]
        assert float(r["val/loss mean"]) == pytest.approx(statistics.fmean(losses))
        assert float(r["val/loss std"]) == pytest.approx(statistics.stdev(losses))
    assert float(table[0]["val/loss mean"]) <= float(table[1]["val/loss mean"])
    with open(sweep / "summary.csv") as f:
        assert {"test/loss", "test/acc"} <= set(next(csv.DictReader(f)))


def test_evaluation_in_larger_batches_gives_the_training_batches_figures():
    """Evaluation runs in batches of eval_batch_size (forward alone, eval mode: each image's
    outputs depend on its batch only by float rounding): the same accuracy and confusion counts
    as batches of the training size here, the same loss to float rounding, and ``limit`` still
    counts training batches of images."""
    from cnnrun import nn
    from cnnrun.run.step import EVAL_ELEMENTS, EVAL_IMAGES, eval_batch_size, evaluate

    assert eval_batch_size(32, (1, 32, 32)) == EVAL_IMAGES  # small inputs: up to 256
    assert eval_batch_size(64, (3, 32, 32)) == max(64, EVAL_ELEMENTS // 3072)
    assert eval_batch_size(16, (3, 224, 224)) == 16  # never fewer than a training batch
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        [
            ("conv", nn.Conv2d(1, 4, 3, rng=rng)),
            ("bn", nn.BatchNorm2d(4)),
            ("relu", nn.ReLU()),
            ("flat", nn.Flatten()),
            ("fc", nn.Linear(144, 3, rng=rng)),
        ]
    )
    model["bn"].running_mean[:] = rng.standard_normal(4)  # eval mode reads these
    data = np.random.default_rng(1)
    x, y = data.standard_normal((300, 1, 8, 8)).astype(np.float32), data.integers(0, 3, 300)
    loss_fn = nn.CrossEntropyLoss()
    assert eval_batch_size(7, x.shape[1:]) == EVAL_IMAGES  # 256 of 300: two batches

    def by_hand(n):  # batches of the training size
        counts, total = np.zeros((3, 3), np.int64), 0.0
        for start in range(0, n, 7):
            xb, yb = x[start : min(start + 7, n)], y[start : min(start + 7, n)]
            logits = model.eval().forward(xb)
            total += loss_fn.forward(logits, yb) * len(yb)
            np.add.at(counts, (yb, logits.argmax(axis=1)), 1)
        return total / n, counts

    sizes = []
    forward = model.forward
    for limit, n in ((None, 300), (3, 21)):
        counts = np.zeros((3, 3), np.int64)
        model.forward = lambda xb: sizes.append(len(xb)) or forward(xb)
        loss, acc = evaluate(model, loss_fn, x, y, 7, limit, counts)
        del model.forward
        want_loss, want_counts = by_hand(n)
        np.testing.assert_array_equal(counts, want_counts)
        assert acc == np.trace(want_counts) / n
        assert loss == pytest.approx(want_loss, rel=1e-6)
    assert sizes == [256, 44, 21]  # the eval batches, and a limit of 3 batches of 7
