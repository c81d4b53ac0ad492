"""The benchmark's cases: its networks are conf/model's, built as a run builds them, and the
PyTorch twin it times computes what the cnnrun model computes (float64: loss, gradients and
running statistics within 1e-10). No timings are asserted: speed is the benchmark's."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import rel_err
from omegaconf import OmegaConf

from cnnrun import nn
from cnnrun.bench import cases, report, twin
from cnnrun.models import build_model
from cnnrun.run.config import config_dir

TOL = 1e-10  # float64, relative to the scale of each tensor
VGG = cases.Net("vgg_small", "cifar10")  # 3x32x32: three input channels, 'same' 3x3 convs


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in model.state_dict().items()}


def test_the_step_case_is_conf_model_lenet():
    """The YAML file, resolved against the data config, through build_model: the same layers,
    shapes and weights as the step case."""
    model, x, y = cases.step_setup(64)
    yaml = OmegaConf.load(config_dir() / "model" / "lenet.yaml")
    cfg = OmegaConf.create({"model": yaml, "data": {"num_classes": 10}})
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    want = build_model(spec, (1, 32, 32), default_padding="valid", rng=np.random.default_rng(0))
    assert [type(layer) for layer in model] == [type(layer) for layer in want]
    assert [repr(layer) for layer in model] == [repr(layer) for layer in want]
    got = model.state_dict()
    assert all(np.array_equal(got[k], v) for k, v in want.state_dict().items())
    assert shapes(model)["fc1.weight"] == (120, 400) and shapes(model)["fc3.weight"] == (10, 84)
    assert x.shape == (64, 1, 32, 32) and 0 <= y.min() and y.max() < 10


def test_a_changed_model_yaml_changes_the_case(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    lenet = conf / "model" / "lenet.yaml"
    lenet.write_text(lenet.read_text().replace("out_features: 120", "out_features: 100"))
    (conf / "data" / "mnist.yaml").write_text("channels: 1\nimage_size: 28\nnum_classes: 7\n")
    model, shape, classes = cases.build_net(cases.STEP_NET, np.random.default_rng(0), conf=conf)
    assert shape == (1, 32, 32) and classes == 7  # data.image_size=32 is the case's own override
    assert shapes(model)["fc1.weight"] == (100, 400)
    assert shapes(model)["fc2.weight"] == (84, 100)
    assert shapes(model)["fc3.weight"] == (7, 84)  # ${data.num_classes}, resolved


def test_case_names_are_the_cases():
    names = cases.case_names()
    assert names[:2] == ["step/64", "step/256"] and len(names) == 2 + 2 * len(cases.LAYERS)
    assert list(cases.cnnrun_cases("numpy")) == names


# --- the PyTorch twin --------------------------------------------------------------------------


def test_no_twin_for_padding_pytorch_lacks():
    layer = nn.Conv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="no torch.nn.Conv2d twin"):
        twin.conv_padding(layer)
    assert twin.conv_padding(nn.Conv2d(1, 2, 3, dilation=2, padding="full")) == (4, 4)
    assert twin.conv_padding(nn.Conv2d(1, 2, 3, padding=(1, 2))) == (1, 2)


def _train_step(model: nn.Sequential, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    loss_fn = nn.CrossEntropyLoss()
    model.zero_grad()
    loss = loss_fn.forward(model.forward(x), labels)
    dx = model.backward(loss_fn.backward())
    return float(loss), {"input": dx} | {n: p.grad for n, p in model.named_parameters()}


def _torch_step(torch, module, x: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(module(xt), torch.from_numpy(labels))
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    return float(loss.detach()), {"input": xt.grad.numpy()} | grads


@pytest.mark.torch
@pytest.mark.parametrize("net", [cases.STEP_NET, VGG], ids=lambda n: n.model)
def test_the_torch_twin_trains_like_the_model(torch, net):
    """float64, a batch of 8 with random labels: the same loss, input and parameter gradients,
    and (vgg_small's batch norm) the same running statistics after the step."""
    model, shape, classes = cases.build_net(net, np.random.default_rng(3))
    model.to(np.float64)
    for layer in model:
        if isinstance(layer, nn.Dropout):
            layer.eval()  # the masks are drawn differently; eval is copied to the twin
    module = twin.torch_twin(model)
    assert list(module.state_dict()) == list(model.state_dict())
    data = np.random.default_rng(4)
    x = data.standard_normal((8, *shape))
    labels = data.integers(0, classes, 8)
    loss, grads = _train_step(model, x, labels)
    twin_loss, twin_grads = _torch_step(torch, module, x, labels)
    assert abs(loss - twin_loss) <= TOL * abs(loss)
    assert set(grads) == set(twin_grads)
    errors = {k: rel_err(grads[k], twin_grads[k]) for k in grads}
    state = module.state_dict()
    errors |= {k: rel_err(v, state[k].numpy()) for k, v in model.state_dict().items()}
    assert max(errors.values()) < TOL, errors


@pytest.mark.torch
@pytest.mark.parametrize("name", list(cases.LAYERS))
def test_the_torch_conv_cases_compute_the_layer(torch, name):
    layer, x, dy, first = cases.conv_setup(name)
    layer.to(np.float64)
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    module = twin.torch_twin(layer)
    y = layer.forward(x)
    layer.backward(dy)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    assert rel_err(y, yt.detach().numpy()) < TOL
    assert rel_err(layer.weight.grad, module.weight.grad.numpy()) < TOL
    assert rel_err(layer.bias.grad, module.bias.grad.numpy()) < TOL


# --- the benchmark -------------------------------------------------------------------------


def fake_best(scale: float) -> dict:
    names = [f"step/{b}" for b in cases.STEP_BATCHES] + [
        f"{kind}/{name}" for name in cases.LAYERS for kind in ("forward", "forward_backward")
    ]
    return {name: scale * 1e-3 for name in names}


def test_bench_report_ratios_and_table():
    result = report.report(
        {"numpy": fake_best(4.0), "numba": fake_best(1.25), "torch": fake_best(1.0)}, threads=2
    )
    assert result["step"]["numba"]["64"]["ratio_to_torch"] == pytest.approx(0.8)
    assert result["step"]["torch"]["256"]["images_per_s"] == pytest.approx(256 / 1e-3)
    forward, both = cases.conv_flops("lenet_conv1")
    assert forward == 2 * 64 * 6 * 28 * 28 * 25 and both == 2 * forward  # conv1: no dX
    assert cases.conv_flops("lenet_conv2")[1] == 3 * cases.conv_flops("lenet_conv2")[0]
    row = result["layers"]["numpy"]["same3x3_16to32"]
    assert row["forward_gflops"] == pytest.approx(2 * 64 * 32 * 32 * 32 * 16 * 9 / 4e-3 / 1e9)
    assert row["forward_backward_ratio_to_torch"] == pytest.approx(0.25)
    table = report.format_table(result)
    assert "(0.80x)" in table and "lenet_conv2" in table
    alone = report.report({"numpy": fake_best(4.0)}, threads=1)  # no PyTorch: no ratios
    assert "ratio_to_torch" not in alone["step"]["numpy"]["64"]
    report.format_table(alone)


def run_bench(folder, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m cnnrun.bench --quick`` in ``folder``: the process and the JSON it wrote."""
    out = folder / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "cnnrun.bench", "--quick", "--json", str(out), *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_quick_writes_json(tmp_path):
    done, result = run_bench(tmp_path)
    assert {"step", "layers", "numba_compile", "machine", "settings"} <= set(result)
    impls = {"numpy", "numba"} | ({"torch"} if result["machine"]["torch"] else set())
    assert set(result["step"]) == impls
    for impl in impls:
        assert set(result["step"][impl]) == {"64", "256"}
        assert result["step"][impl]["64"]["images_per_s"] > 0
        assert set(result["layers"][impl]) == set(cases.LAYERS)
    if "torch" in impls:
        assert result["step"]["torch"]["64"]["ratio_to_torch"] == pytest.approx(1.0)
    compile_ = result["numba_compile"]
    assert compile_["cold_compile_s"] > 0 and compile_["warm_cache_misses"] == 0
    assert "images/s" in done.stdout and "ratio to PyTorch" in done.stdout


@pytest.mark.slow
def test_bench_logging_times_a_run_with_the_dashboard_on_and_off(tmp_path):
    overrides = ["data=synthetic", "data.num_samples=64", "trainer.max_epochs=2"]
    done, result = run_bench(tmp_path, "--logging", *overrides)
    assert result["overrides"] == overrides and result["rounds"] == 2
    on, off = (result["images_per_s"][k] for k in ("logging on", "logging off"))
    assert on > 0 and off > 0 and result["ratio"] == pytest.approx(on / off)
    assert 0 < result["dashboard_share"] < 1
    assert "on / off" in done.stdout
    assert not list(tmp_path.glob("*/tb")) and not (tmp_path / "runs").exists()  # all in a tmp
