"""What the dashboard writes, read back with TensorBoard's own reader: the event files, the
pictures' colour scale, the gradient-flow figures against their definitions, the probe that
must leave the model untouched, the graph, HParams rows of failed runs, panels over a resume,
and a run that imports no deep-learning framework."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from runner_helpers import LENET_PARAMS, LENET_PLACES, TINY, event_accumulator, run_config

from cnnrun import nn, optim
from cnnrun.run import events, pictures
from cnnrun.run import logger as tags
from cnnrun.run.dashboard import PICTURE_SETS, pictures_every, record_failure
from cnnrun.run.probe import inactive_fraction, probe
from cnnrun.run.step import train_step
from cnnrun.run.train import NonFiniteError, train


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB PNG without filters (what events.png writes), every chunk's CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + 3 * w)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:].reshape(h, w, 3)


def test_event_file_read_back_by_tensorboard(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    values = rng.normal(size=1000)
    writer = events.EventFile(tmp_path)
    writer.summary(3, [events.scalar("a/b", 1.5), events.text("t", "**hi**")])
    writer.summary(4, [events.histogram("h", values), events.image("i", picture)])
    writer.close()
    acc = event_accumulator(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("a/b")] == [(3, 1.5)]
    assert acc.Tensors("t")[0].tensor_proto.string_val == [b"**hi**"]
    histo = acc.Histograms("h")[0].histogram_value
    assert histo.num == 1000 and histo.min == values.min() and histo.max == values.max()
    assert histo.sum == pytest.approx(values.sum()) and sum(histo.bucket) == 1000
    image = acc.Images("i")[0]
    assert (image.width, image.height) == (7, 5)
    np.testing.assert_array_equal(decode_png(image.encoded_image_string), picture)


def test_refilled_scalar_events_are_those_summary_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(events.time, "time", lambda: 1234.5)
    steps = [(0, {"a": 0.0, "b": -1.0}), (7, {"a": 2.5, "b": 3.0}), (200, {"c": 0.125})]
    plain = events.EventFile(tmp_path / "plain", name="e")
    refilled = events.EventFile(tmp_path / "refilled", name="e")
    for step, values in [*steps, steps[1]]:  # the first set of tags again, after another
        plain.summary(step, [events.scalar(t, v) for t, v in values.items()])
        refilled.scalars(step, values)
    plain.close(), refilled.close()
    assert (tmp_path / "refilled" / "e").read_bytes() == (tmp_path / "plain" / "e").read_bytes()
    written = events.read_events(tmp_path / "refilled" / "e")[2:]  # after version and START
    got = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in written]
    assert got == [*steps, steps[1]]


def test_held_events_are_written_in_order_at_a_flush(tmp_path):
    writer = events.EventFile(tmp_path, name="e")
    expected = []
    for step in range(events.EventFile.HOLD + 5):  # past one batch of held events
        if step % 7 == 0:
            writer.summary(step, [events.text("t", f"at {step}")])
            expected.append((step, "t"))
        writer.scalars(step, {"loss": step / 8})
        expected.append((step, "loss"))
    writer.flush()  # a checkpoint follows: everything so far is in the file
    written = events.read_events(tmp_path / "e")[2:]
    assert [(e.step, e.summary.value[0].tag) for e in written] == expected
    assert [e.summary.value[0].simple_value for e in written if e.step == 9] == [9 / 8]
    writer.close()


def test_histogram_of_no_finite_value_is_not_written():
    assert events.histogram("h", np.array([np.nan, np.inf])) is None
    one = events.histogram("h", np.full(4, 2.0))  # a single value still gets a bucket
    assert one.histo.num == 4 and sum(one.histo.bucket) == 4


def test_filters_share_one_symmetric_scale():
    w = np.zeros((2, 1, 3, 3))
    w[0] = 2.0  # the largest magnitude: full red
    w[1] = -1.0  # half of it, negative: halfway to full blue
    picture = pictures.filters(w)
    factor = pictures.factor_for(3, 3)
    top = left = pictures.GAP
    first = picture[top : top + 3 * factor, left : left + 3 * factor]
    second_left = left + 3 * factor + pictures.GAP
    second = picture[top : top + 3 * factor, second_left : second_left + 3 * factor]
    assert (first == first[0, 0]).all() and (second == second[0, 0]).all()
    red, blue, white = (pictures.diverging(np.array([v]), 1.0)[0] for v in (1.0, -1.0, 0.0))
    np.testing.assert_array_equal(first[0, 0], red)
    half_blue = pictures.diverging(np.array([-0.5]), 1.0)[0]
    np.testing.assert_array_equal(second[0, 0], half_blue)
    assert not np.array_equal(half_blue, blue) and not np.array_equal(half_blue, white)
    # the separators: a colour that no value of the scale takes
    np.testing.assert_array_equal(picture[0, 0], pictures.SEPARATOR)
    scale = pictures.diverging(np.linspace(-1, 1, 2001), 1.0)
    assert not (scale == pictures.SEPARATOR).all(axis=1).any()


def test_weight_and_gradient_side_by_side_each_on_its_scale():
    w = np.ones((4, 3, 5, 5))
    both = pictures.weight_and_gradient(w, w * 1e-6)  # dW far smaller: still full colour
    alone = pictures.filters(w)
    assert both.shape[0] == alone.shape[0] and both.shape[1] > 2 * alone.shape[1]
    np.testing.assert_array_equal(both[:, : alone.shape[1]], alone)
    np.testing.assert_array_equal(both[:, -alone.shape[1] :], alone)


@pytest.mark.parametrize("factor", [1, 3])
def test_grid_places_every_enlarged_tile_between_separators(factor):
    """Against the layout written out pixel by pixel: ragged rows, one tile copy each."""
    rng = np.random.default_rng(factor)
    h, w, g = 2, 3, pictures.GAP
    tiles = [[rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)] for n in (3, 1)]
    picture = pictures.grid(tiles, factor)
    th, tw = h * factor, w * factor
    expected = np.empty((2 * (th + g) + g, 3 * (tw + g) + g, 3), np.uint8)
    expected[...] = pictures.SEPARATOR
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            top, left = g + r * (th + g), g + c * (tw + g)
            expected[top : top + th, left : left + tw] = np.kron(tile, np.ones((factor, factor, 1)))
    np.testing.assert_array_equal(picture, expected)
    stacked = np.stack([np.stack(tiles[0])] * 2)  # the same picture from a (rows, cols) array
    np.testing.assert_array_equal(pictures.grid(stacked, factor)[: th + g], expected[: th + g])


@pytest.mark.parametrize("max_epochs", [1, 6, 7, 9, 11, 12, 13, 50, 100])
def test_a_run_gets_about_picture_sets_sets_of_pictures(max_epochs):
    """Every epoch up to PICTURE_SETS epochs, then about that many (and the last epoch's)."""
    every = pictures_every(None, max_epochs)
    sets = sum(e % every == 0 or e == max_epochs for e in range(1, max_epochs + 1))
    if max_epochs <= PICTURE_SETS:
        assert sets == max_epochs
    else:
        assert PICTURE_SETS // 2 < sets <= PICTURE_SETS + 1, (every, sets)
    assert pictures_every(3, max_epochs) == 3


def test_confusion_rows_are_fractions_of_their_class():
    counts = np.array([[3, 1], [0, 0]])
    picture = pictures.confusion(counts, cell_px=1)
    g = pictures.GAP
    cells = picture[g : g + 2, g : g + 2]
    np.testing.assert_array_equal(cells[0, 0], pictures.sequential(np.array([0.75]))[0])
    np.testing.assert_array_equal(cells[1, 1], pictures.sequential(np.array([0.0]))[0])


def small_model(seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        [
            ("conv1", nn.Conv2d(2, 3, 3, padding="same", rng=rng)),
            ("bn1", nn.BatchNorm2d(3)),
            ("act1", nn.ReLU()),
            ("flat", nn.Flatten()),
            ("fc", nn.Linear(3 * 5 * 6, 4, rng=rng)),
            ("act2", nn.Tanh()),
        ]
    ).to(np.float64)


def batch(n: int = 6, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 5, 6)), rng.integers(0, 4, n)


def test_update_ratio_is_lr_times_gradient_over_weight():
    model = small_model()
    x, y = batch()
    before = {p.name: p.data.copy() for p in model.parameters()}
    lr = 0.1
    result = train_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr), x, y, True)
    zero = {n for n, w in before.items() if not w.any()}
    assert zero == {"bn1.bias"}  # no ratio to a zero weight
    assert set(result.update_ratios) == set(before) - zero
    for p in (p for p in model.parameters() if p.name not in zero):  # plain SGD: -lr * dW
        expected = lr * np.linalg.norm(p.grad) / np.linalg.norm(before[p.name])
        assert result.update_ratios[p.name] == pytest.approx(expected, rel=1e-12), p.name
    assert set(result.inactive) == {"act1", "act2"}


def test_inactive_fraction_counts_units_off_for_the_whole_batch():
    relu = nn.ReLU()
    y = np.zeros((3, 2, 2))  # (N, features...): 4 units
    y[0, 0, 0] = 1.0  # unit (0, 0) fires once: alive
    y[2, 1, 1] = 0.5  # unit (1, 1) too
    assert inactive_fraction(relu, y) == 0.5
    tanh = nn.Tanh()
    assert inactive_fraction(tanh, np.array([0.0, 0.995, -0.999, 0.5])) == 0.5
    sigmoid = nn.Sigmoid()
    assert inactive_fraction(sigmoid, np.array([0.001, 0.5, 0.9999, 0.3])) == 0.5


def test_probe_leaves_the_model_as_it_was_and_gives_the_input_gradient():
    model = small_model()
    x, y = batch()
    loss = nn.CrossEntropyLoss()
    train_step(model, loss, optim.SGD(model.parameters(), 0.1), x, y)  # grads and BN stats set
    state = {k: v.copy() for k, v in model.state_dict().items()}
    grads = [p.grad.copy() for p in model.parameters()]
    seen = probe(model, loss, x[:3], y[:3])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g, err_msg=p.name)
    assert model.training and list(seen.conv_maps) == ["conv1"]
    assert seen.conv_maps["conv1"].shape == (3, 3, 5, 6)
    # dL/dx by central differences, in eval mode as the probe runs
    model.eval()
    eps, i = 1e-6, (1, 0, 2, 3)
    plus, minus = x[:3].copy(), x[:3].copy()
    plus[i] += eps
    minus[i] -= eps
    numeric = loss.forward(model.forward(plus), y[:3]) - loss.forward(model.forward(minus), y[:3])
    assert seen.input_grad[i] == pytest.approx(numeric / (2 * eps), rel=1e-6)
    assert seen.first_conv == "conv1" and seen.weight_grad.shape == (3, 2, 3, 3)


def test_graph_of_a_residual_network_has_the_merge(tmp_path):
    from tensorboard.compat.proto import graph_pb2

    out = tmp_path / "run"
    train(run_config(out, ["model=resnet20", "data.image_size=8", "trainer.limit_train_batches=1"]))
    graph = event_accumulator(out / "tb").Graph()
    assert isinstance(graph, graph_pb2.GraphDef)
    nodes = {n.name: n for n in graph.node}
    add = nodes["block1_1/add"]
    assert add.op == "Add" and len(add.input) == 2  # the branch's end and the shortcut
    assert "block1_1/branch/bn2" in add.input
    conv = nodes["block1_1/branch/conv1"]
    assert conv.attr["weight"].s.decode() == "(16,16,3,3)"
    assert conv.attr["input shape"].s.decode() == "(16,16,8,8)"
    dims = [d.size for d in conv.attr["_output_shapes"].list.shape[0].dim]
    assert dims == [16, 16, 8, 8]
    assert list(nodes["loss"].input) == ["fc"]


def hparams_row(tb):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = event_accumulator(tb).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    return start.session_start_info.hparams, end.session_end_info.status


def test_a_diverged_run_keeps_its_hparams_row_with_the_reason(tmp_path, monkeypatch):
    from tensorboard.plugins.hparams import api_pb2

    import cnnrun.run.train as train_module

    real, calls = train_module.train_step, []

    def diverges_at_the_third_batch(model, loss_fn, optimizer, x, y, *rest):
        calls.append(1)
        return real(model, loss_fn, optimizer, x * np.nan if len(calls) == 3 else x, y, *rest)

    monkeypatch.setattr(train_module, "train_step", diverges_at_the_third_batch)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError):
        train(run_config(out, ["optim.lr=0.5", "trainer.max_epochs=2"]))
    hparams, status = hparams_row(out / "tb")
    assert hparams["status"].string_value.startswith("failed: non-finite")
    assert hparams["optim.lr"].number_value == 0.5 and status == api_pb2.STATUS_FAILURE


def test_a_killed_job_gets_a_row(tmp_path):
    """What the launcher writes for a job that left no result (kill -9)."""
    record_failure(tmp_path, run_config(tmp_path), "killed by SIGKILL")
    hparams, _ = hparams_row(tmp_path / "tb")
    assert hparams["status"].string_value == "failed: killed by SIGKILL"
    assert hparams["model"].string_value == "lenet"


@pytest.mark.parametrize(
    "status, kind",
    [
        ("ok", "STATUS_SUCCESS"),
        ("failed: killed by SIGKILL", "STATUS_FAILURE"),
        ("interrupted at step 5", "STATUS_UNKNOWN"),  # was shown as running
        ("running", "STATUS_RUNNING"),
    ],
)
def test_the_hparams_session_status_follows_the_row_s_status(tmp_path, status, kind):
    from tensorboard.plugins.hparams import api_pb2

    tags.write_hparams(tmp_path / "tb", {"model": "lenet"}, status)
    hparams, got = hparams_row(tmp_path / "tb")
    assert hparams["status"].string_value == status and got == getattr(api_pb2, kind)


def panels(out):
    """Every (run, kind, tag, step) that TensorBoard shows of a run folder."""
    found = set()
    for run in ("", tags.TRAIN_RUN, tags.VAL_RUN):
        acc = event_accumulator(out / "tb" / run)
        kinds = (("scalars", acc.Scalars), ("images", acc.Images), ("histograms", acc.Histograms))
        for kind, read in kinds:
            for tag in acc.Tags()[kind]:
                steps = [e.step for e in read(tag)]
                assert len(steps) == len(set(steps)), (run, tag, steps)  # none twice
                found |= {(run, kind, tag, s) for s in steps}
    return found


@pytest.mark.parametrize(
    "every, histograms",
    [
        (5, {0, 5, 9}),  # step 0, the interval, the end (after 9 steps)
        pytest.param(2, {0, 2, 4, 6, 8}, marks=pytest.mark.slow),  # the last step on it
        pytest.param(3, {0, 3, 6, 9}, marks=pytest.mark.slow),  # the step count on it
    ],
)
def test_a_resumed_run_shows_the_same_panels(tmp_path, every, histograms):
    """The first part ends after 3 steps (1 epoch); its end-of-run histograms, off the interval
    of 5, were once written at its last step, 2, where the resumed part could not take them
    back, and the split run showed a histogram the straight one has not."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    every = [f"trainer.histogram_every_n_steps={every}"]
    train(run_config(straight, [*every, "trainer.max_epochs=3"]))
    train(run_config(split, [*every, "trainer.max_epochs=1"]))
    train(run_config(split, [*every, "trainer.max_epochs=3", "trainer.resume=last"]))
    got, want = panels(split), panels(straight)
    assert {s for _, kind, _, s in want if kind == "histograms"} == histograms
    assert got == want, (sorted(got - want)[:5], sorted(want - got)[:5])
    assert ("", "images", tags.SALIENCY, 0) in got and ("", "images", tags.SALIENCY, 8) in got
    hparams, _ = hparams_row(split / "tb")
    assert hparams["status"].string_value == "ok"


@pytest.mark.slow  # a whole `python -m cnnrun` process
@pytest.mark.torch
def test_a_run_does_not_import_a_deep_learning_framework(tmp_path):
    pytest.importorskip("torch")
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('torch', 'tensorflow', 'tensorboardX', 'jax'))))\n"
        "from cnnrun.__main__ import main\n"
        "main()\n"
    )
    args = [*TINY, f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout[-500:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["val/loss"])


@pytest.mark.parametrize("size", [0, 1, 9, 255, 2048, 5000, 8191, 8192, 8193, 70001])
def test_crc32c_matches_tensorboards_own(size):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from cnnrun.run import crc_jit
    from cnnrun.run.crc import _crc32c_numpy, _update, crc32c, masked_crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert crc_jit.crc32c(b"123456789") == 0xE3069283
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert masked_crc32c(data) == reference(data)
    # the compiled loop (numba runs), the NumPy blocks and the plain loop: one CRC
    plain = _update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert crc_jit.crc32c(data) == crc32c(data) == _crc32c_numpy(data) == plain


def test_plain_and_residual_networks_share_their_branch_tags():
    """So that TensorBoard draws plain20's and resnet20's gradient norms on the same charts:
    every plain20 tag is a resnet20 tag, and the extra ones are resnet20's shortcuts."""
    from runner_helpers import compose_config

    from cnnrun.run.build import build_run_model

    tagged = {}
    for name in ("plain20", "resnet20"):
        cfg = compose_config([f"model={name}", "data.image_size=8"])
        model = build_run_model(cfg, (1, 8, 8), np.random.default_rng(0))
        names = [p.name for p in model.parameters()]
        tagged[name] = set(tags.network_tags(model, names, params=True).values())
    assert tagged["plain20"] < tagged["resnet20"]
    assert all(".shortcut." in t for t in tagged["resnet20"] - tagged["plain20"])
    assert "10-2_block2_1.branch.conv1.weight" in tagged["plain20"]


def test_a_resume_after_a_kill_drops_the_orphaned_steps_in_every_reader(tmp_path):
    """A run killed after writing steps past its checkpoint, resumed from that checkpoint:
    TensorBoard's server (plugin_event_accumulator, as --load_fast=false reads) took the first
    START of a run as its beginning, so the resumed file's START purged nothing and steps
    80-100 showed twice, until every fresh file began with a START of its own."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    first = events.EventFile(tmp_path)
    for step in range(0, 101, 10):
        first.summary(step, [events.scalar("flow/x", step)])
    first.close()  # killed at step 100; its checkpoint was at step 80
    resumed = events.EventFile(tmp_path, purge_step=80)
    for step in range(80, 121, 10):
        resumed.summary(step, [events.scalar("flow/x", -step)])
    resumed.close()
    server = plugin_event_accumulator.EventAccumulator(str(tmp_path))
    server.Reload()
    points = [(e.step, e.tensor_proto.float_val[0]) for e in server.Tensors("flow/x")]
    assert [s for s, _ in points] == list(range(0, 121, 10))
    assert all(v == -s for s, v in points if s >= 80)  # the resumed run's values
    plain = event_accumulator(tmp_path)
    steps = [(e.step, e.value) for e in plain.Scalars("flow/x")]
    assert [s for s, _ in steps] == list(range(0, 121, 10)) and steps[-1] == (120, -120)


def test_hparams_carry_every_overridden_value(tmp_path):
    """A sweep over a key outside the fixed list (data.num_samples) used to give its jobs
    identical rows."""
    from cnnrun.run.build import hyperparameters

    cfg = run_config(tmp_path, ["data.num_samples=96", "optim.lr=0.2"])
    hyper = hyperparameters(
        cfg, overrides=["data.num_samples=96", "optim.lr=0.2", "model=lenet", "hydra.job.chdir=x"]
    )
    assert hyper["data.num_samples"] == 96 and hyper["optim.lr"] == 0.2
    assert "hydra.job.chdir" not in hyper and hyper["model"] == "lenet"


def test_a_failure_row_keeps_what_the_run_wrote(tmp_path):
    from cnnrun.run.logger import read_hparams, write_hparams

    cfg = run_config(tmp_path)
    write_hparams(tmp_path / "tb", {"padding used": "same", "model": "lenet"}, "running")
    record_failure(tmp_path, cfg, "killed by SIGKILL")  # replaces "running", keeps the padding
    row = read_hparams(tmp_path / "tb")
    assert row["status"] == "failed: killed by SIGKILL" and row["padding used"] == "same"
    write_hparams(tmp_path / "tb", {"padding used": "same"}, "failed: non-finite loss")
    record_failure(tmp_path, cfg, "NonFiniteError")  # the run's own failure row stays
    assert read_hparams(tmp_path / "tb")["status"] == "failed: non-finite loss"


def test_every_panel_numbers_a_layer_the_same(tmp_path):
    out = tmp_path / "run"
    train(run_config(out, ["model=resnet20", "data.image_size=8", "trainer.limit_train_batches=1"]))
    found = event_accumulator(out / "tb").Tags()
    conv = "block1_1.branch.conv1"
    grad = next(t for t in found["scalars"] if t.endswith(f"_{conv}.weight") and "grad_norm" in t)
    hist = next(t for t in found["histograms"] if t.endswith(f"_{conv}") and "weights" in t)
    maps = next(t for t in found["images"] if t.endswith(f"_{conv}"))
    place = grad.split("/")[-1].split("_", 1)[0]
    assert place == "04-2"  # block1_1 is resnet20's 4th layer; conv1 the 2nd module in it
    for tag in (hist, maps):
        assert tag.split("/")[-1].startswith(f"{place}_"), tag


def test_one_batch_epochs_write_each_picture_once_a_step(tmp_path):
    out = tmp_path / "run"
    train(run_config(out, ["trainer.limit_train_batches=1", "trainer.max_epochs=2"]))
    acc = event_accumulator(out / "tb")
    assert [i.step for i in acc.Images(tags.SALIENCY)] == [0, 1]


def test_the_confusion_matrix_rows_are_the_true_classes():
    from cnnrun.run.step import evaluate

    class AlwaysTwo(nn.Module):  # predicts class 2 whatever it sees
        def forward(self, x):
            logits = np.zeros((len(x), 4))
            logits[:, 2] = 1.0
            return logits

    counts = np.zeros((4, 4), np.int64)
    x, y = np.zeros((6, 1, 2, 2)), np.array([0, 1, 1, 3, 3, 3])
    evaluate(AlwaysTwo(), nn.CrossEntropyLoss(), x, y, 4, None, counts)
    assert counts[:, 2].tolist() == [1, 2, 0, 3] and counts.sum() == 6


@pytest.mark.slow  # two `python -m cnnrun` processes
def test_the_unused_padding_warning_only_when_the_user_set_it(tmp_path):
    """resnet20 sets every conv's padding: conv.padding's default was warned about as unused
    on every run, and an MLP, which has no conv layer, too; only a conv.padding the user gave
    deserves the warning."""
    from runner_helpers import run_cnnrun

    base = ["model=resnet20", "data=synthetic", "data.image_size=8", "data.num_samples=64"]
    base += ["trainer.max_epochs=1", "trainer.progress=false"]
    quiet = run_cnnrun([*base, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    told = run_cnnrun([*base, "conv.padding=same", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert quiet.returncode == told.returncode == 0, quiet.stderr + told.stderr
    assert "is not used" not in quiet.stdout + quiet.stderr
    assert "conv.padding=same is not used" in told.stdout + told.stderr
    mlp = run_cnnrun([*base[1:], "model=mlp", f"hydra.run.dir={tmp_path / 'c'}"], tmp_path)
    assert mlp.returncode == 0 and "is not used" not in mlp.stdout + mlp.stderr, mlp.stderr


def test_the_confusion_matrix_every_epoch_the_probe_s_pictures_at_their_interval(tmp_path):
    train(run_config(tmp_path, ["trainer.max_epochs=3", "trainer.pictures_every_n_epochs=3"]))
    acc = event_accumulator(tmp_path / "tb")
    assert [i.step for i in acc.Images(tags.CONFUSION)] == [2, 5, 8]  # each epoch's last step
    assert [i.step for i in acc.Images(tags.SALIENCY)] == [0, 8]  # untrained, the third epoch


def test_the_custom_scalars_charts_find_their_tags_in_network_order(tmp_path):
    """Each chart of the layout TensorBoard's Custom Scalars tab draws matches tags the run
    wrote: loss and accuracy in both the train and the validation run, the gradient flow of
    every weight, in the order of the network."""
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2

    train(run_config(tmp_path, ["model=lenet", "trainer.flow_every_n_steps=1"]))
    run = event_accumulator(tmp_path / "tb")
    (config,) = run.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {c.title: c.multiline.tag[0] for cat in layout.category for c in cat.chart}
    written = {
        name: set(event_accumulator(tmp_path / "tb" / name).Tags()["scalars"])
        for name in ("", tags.TRAIN_RUN, tags.VAL_RUN)
    }
    for title in ("loss", "accuracy"):
        for name in (tags.TRAIN_RUN, tags.VAL_RUN):
            assert any(re.search(charts[title], t) for t in written[name]), (title, name)
    flow = {t: c for t, c in charts.items() if t not in ("loss", "accuracy")}
    assert len(flow) == 3
    params = [f"{place}_{p}" for p, place in zip(LENET_PARAMS, LENET_PLACES)]
    for title, regex in flow.items():
        found = sorted(t for t in written[""] if re.search(regex, t))
        assert found, title
        if "inactive" not in regex:  # one line a parameter, sorted as the network runs
            layers = [t.rsplit("/", 1)[1] for t in found if "global" not in t]
            assert layers == sorted(params), (title, layers)  # bias before weight in a layer
            places = [name.split("_")[0] for name in layers]
            assert places == sorted(places) == LENET_PLACES  # conv1 first, fc3 last
