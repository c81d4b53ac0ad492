"""``train(cfg)`` end to end: the run folder the README describes, its TensorBoard tags read
back with TensorBoard's own reader, exact resumption, seeding, and ``python -m cnnrun`` as a
user runs it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from runner_helpers import (
    LENET_PARAMS,
    LENET_PLACES,
    TINY,
    TRAIN_TAGS,
    compose_config,
    event_accumulator,
    run_cnnrun,
    run_config,
    sha256,
)

from cnnrun.errors import ConfigError
from cnnrun.run import logger as tags
from cnnrun.run.train import train

METRIC_KEYS = {
    "train/loss",
    "val/loss",
    "val/acc",
    "epoch",
    "step",
    "seconds",
    "train/images_per_s",
}

# the first conv layer of the tiny run: 16 images of 1x12x12, 'same' padding of 2 on each side
TINY_TRACE = [
    "dW = corr_valid(x_pad (16,1,16,16), dY (16,6,12,12)) -> (6,1,5,5)",
    "dX = conv_full(dY (16,6,12,12), W (6,1,5,5)) -> (16,1,16,16), cropped to (16,1,12,12)",
    # conv2 on the pooled 6x6 maps
    "dW = corr_valid(x_pad (16,6,10,10), dY (16,16,6,6)) -> (16,6,5,5)",
    "dX = conv_full(dY (16,16,6,6), W (16,6,5,5)) -> (16,6,10,10), cropped to (16,6,6,6)",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of the tiny run: (its folder, train's return value)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    return out, train(run_config(out))


def lenet_model():
    from cnnrun.run.build import build_run_model

    cfg = run_config(Path("unused"))
    return build_run_model(cfg, (1, 12, 12), np.random.default_rng(0))


def checkpoint_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "meta"}


def checkpoint_meta(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"]))


# -- the run folder ------------------------------------------------------------------------


def test_run_folder_holds_everything(tiny_run):
    out, _ = tiny_run
    assert (out / "cnnrun.log").is_file()
    log = (out / "cnnrun.log").read_text()
    assert "epoch 1/1" in log and "corr_valid" in log
    assert list((out / "tb").glob("events.out.tfevents.*"))
    for name in ("last.npz", "best.npz"):
        arrays = checkpoint_arrays(out / "checkpoints" / name)
        assert {k for k in arrays if k.startswith("model/")} == {f"model/{p}" for p in LENET_PARAMS}
        assert arrays["model/conv1.weight"].shape == (6, 1, 5, 5)
        assert arrays["model/fc1.weight"].shape == (120, 16 * 3 * 3)
    meta = checkpoint_meta(out / "checkpoints" / "last.npz")
    assert (meta["model_name"], meta["epoch"], meta["step"]) == ("lenet", 1, 3)
    assert OmegaConf.create(meta["config"]).data.image_size == 12


def test_shape_trace_file(tiny_run):
    out, _ = tiny_run
    trace = (out / "shape_trace.md").read_text()
    for line in TINY_TRACE:
        assert line in trace
    assert "(16,1,12,12)" in trace and "(16,144)" in trace


def test_metrics_json_and_return_value(tiny_run):
    out, val_loss = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert (metrics["epoch"], metrics["step"]) == (1, 3)  # 48 training images, batches of 16
    assert val_loss == metrics["val/loss"]
    assert isinstance(val_loss, float) and math.isfinite(val_loss)
    # untrained on 4 classes: near ln 4
    assert 0.5 < metrics["val/loss"] < 3 and 0 <= metrics["val/acc"] <= 1
    assert metrics["seconds"] > 0 and metrics["train/images_per_s"] > 0
    # the reported speed is wall-clock: never more than the steps' own
    assert metrics["train/images_per_s"] <= metrics["train/step_images_per_s"]


# -- TensorBoard, read back with TensorBoard's own reader ----------------------------------


def test_tensorboard_scalars(tiny_run):
    out, val_loss = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    train_run = event_accumulator(out / "tb" / tags.TRAIN_RUN)
    assert set(TRAIN_TAGS) <= set(train_run.Tags()["scalars"])
    assert [e.step for e in train_run.Scalars(tags.STEP_LOSS)] == [0, 1, 2]
    # the curves are epoch averages at the epoch's last step, equal to metrics.json's
    (train_loss,) = train_run.Scalars(tags.LOSS)
    assert train_loss.step == 2 and train_loss.value == pytest.approx(metrics["train/loss"])
    (train_acc,) = train_run.Scalars(tags.ACC)
    assert train_acc.value == pytest.approx(metrics["train/acc"])
    assert [e.value for e in train_run.Scalars(tags.LR)] == [pytest.approx(0.05)]
    val_run = event_accumulator(out / "tb" / tags.VAL_RUN)
    assert [e.step for e in val_run.Scalars(tags.LOSS)] == [2]  # a resume purges from step 3
    assert val_run.Scalars(tags.LOSS)[-1].value == pytest.approx(val_loss, rel=1e-6)
    assert val_run.Scalars(tags.ACC)[-1].value == pytest.approx(metrics["val/acc"])
    run = event_accumulator(out / "tb")
    named = {p: f"{place}_{p}" for p, place in zip(LENET_PARAMS, LENET_PLACES)}
    assert tags.network_tags(lenet_model(), LENET_PARAMS, params=True) == named
    # the gradient flow every trainer.flow_every_n_steps (10): here step 0 only; the global
    # norm is the norm of the per-parameter norms
    norm_tags = [tags.GRAD_NORM.format(param=named[p]) for p in LENET_PARAMS]
    assert [e.step for e in run.Scalars(norm_tags[0])] == [0]
    parts = [run.Scalars(tag)[0].value for tag in norm_tags]
    (total,) = run.Scalars(tags.GRAD_NORM_GLOBAL)
    assert total.value == pytest.approx(math.sqrt(sum(v * v for v in parts)), rel=1e-5)
    assert total.value > 0
    results = {tags.RESULT.format(name=n): k for k, n in tags.RESULTS.items()}
    for tag, key in results.items():
        assert run.Scalars(tag)[-1].value == pytest.approx(metrics[key], rel=1e-6)


def test_tensorboard_histograms_images_text(tiny_run):
    out, _ = tiny_run
    acc = event_accumulator(out / "tb")
    found = acc.Tags()
    layers = tags.network_tags(lenet_model(), ["conv1", "conv2", "fc1", "fc2", "fc3"])
    expected = {
        kind.format(layer=n) for kind in (tags.WEIGHTS, tags.GRADS) for n in layers.values()
    }
    assert set(found["histograms"]) == expected
    weights = acc.Histograms(tags.WEIGHTS.format(layer="01_conv1"))
    assert [h.step for h in weights] == [0, 3]  # step 0 and the end, after 3 steps
    assert weights[0].histogram_value.num == 6 * 1 * 5 * 5
    pictures = {
        tags.FILTERS.format(layer="01_conv1"),
        tags.ACTIVATIONS.format(layer="01_conv1"),
        tags.ACTIVATIONS.format(layer="04_conv2"),
        tags.SALIENCY,
        tags.CONFUSION,
    }
    assert set(found["images"]) == pictures
    for tag in pictures - {tags.CONFUSION}:  # before training, and at the epoch's end
        assert [i.step for i in acc.Images(tag)] == [0, 2], tag
    assert [i.step for i in acc.Images(tags.CONFUSION)] == [2]
    image = acc.Images(tags.FILTERS.format(layer="01_conv1"))[0]
    assert image.width > 5 and image.height > 5 and image.encoded_image_string[:4] == b"\x89PNG"
    assert tags.SHAPE_TRACE in acc.PluginTagToContent("text")
    text = acc.Tensors(tags.SHAPE_TRACE)[0].tensor_proto.string_val[0].decode()
    assert TINY_TRACE[0] in text and TINY_TRACE[1] in text
    assert "lenet" in text.splitlines()[0] and "```" in text  # a header, then preformatted
    assert found["graph"]


def test_tensorboard_hparams_in_the_run_folder(tiny_run):
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    out, val_loss = tiny_run
    acc = event_accumulator(out / "tb")
    content = acc.PluginTagToContent("hparams")
    # no experiment summary: TensorBoard infers the columns from every run, and marks the
    # hyperparameters that differ between them
    assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["model"].string_value == "lenet"
    assert start.hparams["conv.padding"].string_value == "same"
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.05)
    assert start.hparams["status"].string_value == "ok"
    end = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_end_info"]
    ).session_end_info
    assert end.status == api_pb2.STATUS_SUCCESS


# -- digits, the default data set ----------------------------------------------------------


def test_one_epoch_on_digits(tmp_path):
    out = tmp_path / "run"
    cfg = run_config(
        out,
        [
            "data=digits",
            "conv.padding=valid",
            "data.image_size=32",
            "data.batch_size=32",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=2",
        ],
    )
    val_loss = train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert val_loss == metrics["val/loss"] and math.isfinite(val_loss)
    assert (metrics["epoch"], metrics["step"]) == (1, 3)
    trace = (out / "shape_trace.md").read_text()
    assert "dW = corr_valid(x_pad (32,1,32,32), dY (32,6,28,28)) -> (6,1,5,5)" in trace
    assert "dX = conv_full(dY (32,6,28,28), W (6,1,5,5)) -> (32,1,32,32)" in trace
    assert "dW = corr_valid(x_pad (32,6,14,14), dY (32,16,10,10)) -> (16,6,5,5)" in trace
    arrays = checkpoint_arrays(out / "checkpoints" / "last.npz")
    assert arrays["model/fc1.weight"].shape == (120, 16 * 5 * 5)
    assert arrays["model/fc3.weight"].shape == (10, 84)  # digits: 10 classes
    acc = event_accumulator(out / "tb" / tags.TRAIN_RUN)
    assert [e.step for e in acc.Scalars(tags.STEP_LOSS)] == [0, 1, 2]


# -- resumption and seeds ------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, optim",
    [
        pytest.param("lenet", "sgd", marks=pytest.mark.slow),  # momentum buffers, cosine
        ("lenet", "adam"),  # two moments and a step count per parameter
        pytest.param(
            "vgg_small", "sgd", marks=pytest.mark.slow
        ),  # batch-norm running statistics and dropout masks
    ],
)
def test_resume_equals_uninterrupted_run(tmp_path, model, optim):
    """1 epoch, then resumed to 3, ends bit for bit where 3 epochs in one go end."""
    straight = tmp_path / "straight"
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    common = [f"model={model}", f"optim={optim}", "data.num_samples=64", "seed=3"]  # 3 batches
    loss_straight = train(run_config(straight, [*common, "trainer.max_epochs=3"]))
    train(run_config(first, [*common, "trainer.max_epochs=1"]))
    resume_from = first / "checkpoints" / "last.npz"
    digest = sha256(resume_from)
    loss_resumed = train(
        run_config(resumed, [*common, "trainer.max_epochs=3", f"trainer.resume={resume_from}"])
    )
    assert sha256(resume_from) == digest  # the checkpoint resumed from is untouched

    a = checkpoint_arrays(straight / "checkpoints" / "last.npz")
    b = checkpoint_arrays(resumed / "checkpoints" / "last.npz")
    assert sorted(a) == sorted(b)
    assert any(k.startswith("optim/") for k in a)  # optimiser state is compared too
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    # and it did move: the resumed weights are not the 1-epoch weights
    one = checkpoint_arrays(resume_from)
    first_weight = next(k for k in one if k.startswith("model/conv"))
    assert not np.array_equal(one[first_weight], b[first_weight])
    ma = checkpoint_meta(straight / "checkpoints" / "last.npz")
    mb = checkpoint_meta(resumed / "checkpoints" / "last.npz")
    assert {"epoch", "step", "rng", "best_val_loss", "optimizer"} <= set(ma)
    for meta in (ma, mb):  # the configs differ in trainer.resume only, and so their hashes
        meta.pop("config"), meta["hashes"].pop("meta")
    for key in set(ma) | set(mb):
        assert ma.get(key) == mb.get(key), key
    assert (mb["epoch"], mb["step"]) == (3, 9)
    assert loss_resumed == loss_straight
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert (metrics["epoch"], metrics["step"]) == (3, 9)


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train(run_config(tmp_path / name, [f"seed={seed}"]))
        runs[name] = checkpoint_arrays(tmp_path / name / "checkpoints" / "last.npz")
    for key in runs["a"]:
        assert np.array_equal(runs["a"][key], runs["b"][key]), key
    assert not np.array_equal(runs["a"]["model/conv1.weight"], runs["c"]["model/conv1.weight"])
    assert not np.array_equal(runs["a"]["model/fc3.bias"], runs["c"]["model/fc3.bias"])


def test_train_without_output_dir_is_a_clear_error():
    cfg = compose_config(TINY)
    with pytest.raises(ConfigError, match="paths.output_dir"):
        train(cfg)


# -- the command line ----------------------------------------------------------------------


@pytest.mark.slow  # the README's first command, as a process
def test_python_m_cnnrun_end_to_end(tmp_path):
    result = run_cnnrun(TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    runs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1
    run = runs[0]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", run.parent.name), run
    assert re.fullmatch(r"\d{2}-\d{2}-\d{2}-\d{6}", run.name), run  # time with microseconds
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.model.name == "lenet" and saved.data.image_size == 12
    assert saved.conv.padding == "same" and saved.trainer.max_epochs == 1
    for name in (
        "cnnrun.log",
        "shape_trace.md",
        "metrics.json",
        "checkpoints/last.npz",
        "checkpoints/best.npz",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert TINY_TRACE[0] in (run / "shape_trace.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["step"] == 3
    # the log file records the run, the run folder is where the log says
    log = (run / "cnnrun.log").read_text()
    assert "epoch 1/1" in log and str(run) in log


def test_the_progress_bar_is_not_redrawn_at_every_step(tmp_path, capsys):
    """The bar's loss and accuracy were set with a redraw at every step (3% of the default
    run's fit() with the bars on); they show at tqdm's own redraws, ten a second at most."""
    many = ["data.num_samples=512", "data.batch_size=4", "trainer.progress=true"]
    train(run_config(tmp_path / "run", many))
    steps = json.loads((tmp_path / "run" / "metrics.json").read_text())["step"]
    redraws = capsys.readouterr().err.count("epoch 1:")
    assert steps > 60 and redraws < steps // 3, (steps, redraws)
