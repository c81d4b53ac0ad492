"""The benchmark's cases: its networks are conf/model's, built as a run builds them, and the
PyTorch twin it times computes what the cnnrun model computes (float64: loss, gradients and
running statistics within 1e-10). No timings are asserted: speed is the benchmark's."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import rel_err
from omegaconf import OmegaConf

from cnnrun import nn
from cnnrun.backends import gemm
from cnnrun.backends.numba import precompile
from cnnrun.bench import cases, convs, libraries, nets, peak, report, table, twin
from cnnrun.models import build_model
from cnnrun.run.config import config_dir
from cnnrun.run.logging_cost import run_versus_step

TOL = 1e-10  # float64, relative to the scale of each tensor
STEP_CASES = ["step/lenet/64", "step/lenet/256", "step/vgg_small/64", "step/resnet20/64"]


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in model.state_dict().items()}


def test_the_step_case_is_conf_model_lenet():
    """The YAML file, resolved against the data config, through build_model: the same layers,
    shapes and weights as the step case."""
    model, x, y = nets.step_setup(64)
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


def test_the_cifar_step_cases_are_conf_model_vgg_small_and_resnet20():
    """3x32x32 inputs (data=cifar10), the networks of the YAML files, in training mode."""
    vgg, x, _ = nets.step_setup(64, "vgg_small")
    assert x.shape == (64, 3, 32, 32) and x.dtype == np.float32
    assert shapes(vgg)["conv1_1.weight"] == (16, 3, 3, 3) and shapes(vgg)["fc2.weight"] == (10, 64)
    resnet, _, _ = nets.step_setup(64, "resnet20")
    state = shapes(resnet)
    assert state["block3_1.shortcut.conv.weight"] == (64, 32, 1, 1)  # a projection, option B
    assert sum(int(np.prod(s)) for k, s in state.items() if "running" not in k) > 270_000
    assert all(m.training for _, m in resnet.named_modules())


def test_a_changed_model_yaml_changes_the_case(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    lenet = conf / "model" / "lenet.yaml"
    lenet.write_text(lenet.read_text().replace("out_features: 120", "out_features: 100"))
    (conf / "data" / "mnist.yaml").write_text("channels: 1\nimage_size: 28\nnum_classes: 7\n")
    model, shape, classes = nets.build_net(nets.STEP_NET, np.random.default_rng(0), conf=conf)
    assert shape == (1, 32, 32) and classes == 7  # data.image_size=32 is the case's own override
    assert shapes(model)["fc1.weight"] == (100, 400)
    assert shapes(model)["fc2.weight"] == (84, 100)
    assert shapes(model)["fc3.weight"] == (7, 84)  # ${data.num_classes}, resolved


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_case_names_are_the_cases():
    names = cases.case_names("numpy")
    assert names[:4] == STEP_CASES and names[-2:] == ["gemm/matmul", "gemm/blas"]
    assert len(names) == 4 + 2 * len(convs.LAYERS) + 2
    assert list(cases.cnnrun_cases("numpy", threads=1)) == names
    assert cases.case_names("torch")[-2:] == ["gemm/torch", "gemm/blas"]


def test_the_conv_layers_are_the_six_same_3x3_and_lenet_s():
    same = [name for name in convs.LAYERS if name.startswith("same3x3")]
    assert same == [
        f"same3x3_{c}to{f}_{px}px" for c, f in ((16, 32), (32, 64), (64, 64)) for px in (32, 16)
    ]
    assert list(convs.LAYERS)[:2] == ["lenet_conv1", "lenet_conv2"]
    assert convs.LAYERS["same3x3_32to64_16px"] == (32, 64, 3, 16, "same", False)


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
@pytest.mark.parametrize("net", list(nets.STEP_NETS))
def test_the_torch_twin_trains_like_the_model(torch, net):
    """float64, a batch of 8 with random labels: the same loss, input and parameter gradients,
    and (batch norm) the same running statistics after the step; resnet20 through the
    residual rule."""
    model, shape, classes = nets.build_net(nets.STEP_NETS[net], np.random.default_rng(3))
    model.to(np.float64)
    for _, layer in model.named_modules():
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
def test_the_twin_copies_each_module_s_mode(torch):
    model, _, _ = nets.build_net(nets.STEP_NETS["vgg_small"], np.random.default_rng(0))
    module = twin.torch_twin(model)  # training, as in a run: dropout on
    assert all(m.training for m in module.modules())
    dropout = next(name for name, m in model.named_modules() if isinstance(m, nn.Dropout))
    model.get_submodule(dropout).eval()
    module = twin.torch_twin(model)
    assert not module.get_submodule(dropout).training
    assert module.training and module.get_submodule("bn1_1").training


@pytest.mark.torch
def test_the_residual_twin_has_branch_and_shortcut(torch):
    model, _, _ = nets.build_net(nets.STEP_NETS["resnet20"], np.random.default_rng(0))
    module = twin.torch_module(model)
    block = module.get_submodule("block2_1")
    assert isinstance(block, twin.residual_class())
    assert isinstance(module.get_submodule("block1_1").shortcut, torch.nn.Identity)
    assert isinstance(module.get_submodule("pool")[0], torch.nn.AdaptiveAvgPool2d)


@pytest.mark.torch
@pytest.mark.parametrize("name", list(convs.LAYERS))
def test_the_torch_conv_cases_compute_the_layer(torch, name):
    layer, x, dy, first = convs.conv_setup(name)
    layer.to(np.float64)
    x, dy = x[:4].astype(np.float64), dy[:4].astype(np.float64)  # 4 of the batch: quick
    module = twin.torch_twin(layer)
    y = layer.forward(x)
    layer.backward(dy)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    assert rel_err(y, yt.detach().numpy()) < TOL
    assert rel_err(layer.weight.grad, module.weight.grad.numpy()) < TOL
    assert rel_err(layer.bias.grad, module.bias.grad.numpy()) < TOL


# --- the figures ---------------------------------------------------------------------------


def fake_best(scale: float, impl: str) -> dict:
    """Seconds per call: ``scale`` ms for every case, the GEMM cases 10 times as long."""
    names = cases.case_names(impl)
    return {n: scale * (1e-2 if n.startswith("gemm/") else 1e-3) for n in names}


def fake_result() -> dict:
    impls = {"numpy": 4.0, "numba": 1.25, "torch": 1.0}
    return report.report({impl: fake_best(s, impl) for impl, s in impls.items()}, threads=2)


def test_the_flop_counts():
    forward, both = convs.conv_flops("lenet_conv1")
    assert forward == 2 * 64 * 6 * 28 * 28 * 25 and both == 2 * forward  # conv1: no dX
    assert convs.conv_flops("lenet_conv2")[1] == 3 * convs.conv_flops("lenet_conv2")[0]
    forward, both = convs.conv_flops("same3x3_64to64_16px")
    assert forward == 2 * 64 * 64 * 16 * 16 * 64 * 9 and both == 3 * forward  # 'same': 16x16
    assert peak.gemm_flops(2048) == 2 * 2048**3


def test_bench_report_ratios_peaks_and_table():
    result = fake_result()
    assert result["step"]["numba"]["lenet"]["64"]["ratio_to_torch"] == pytest.approx(0.8)
    assert result["step"]["torch"]["lenet"]["256"]["images_per_s"] == pytest.approx(256 / 1e-3)
    assert result["step"]["numpy"]["resnet20"]["64"]["ratio_to_torch"] == pytest.approx(0.25)
    matmul = 2 * 2048**3 / 4e-2 / 1e9
    assert result["gemm_peak"]["gflops"]["numpy"] == pytest.approx(
        {"matmul": matmul, "blas": matmul}
    )
    assert set(result["gemm_peak"]["gflops"]["torch"]) == {"torch", "blas"}
    row = result["layers"]["numpy"]["same3x3_16to32_32px"]
    gflops = 2 * 64 * 32 * 32 * 32 * 16 * 9 / 4e-3 / 1e9
    assert row["forward_gflops"] == pytest.approx(gflops)
    assert row["forward_percent_of_peak"] == pytest.approx(100 * gflops / matmul)
    assert row["forward_backward_ratio_to_torch"] == pytest.approx(0.25)
    text = table.format_table(result)
    assert "(0.80x)" in text and "same3x3_64to64_16px" in text and "resnet20, batch 64" in text
    assert f"cnnrun gemm.matmul {matmul:.1f}" in text and "% of the worker's GEMM peak" in text
    alone = report.report({"numpy": fake_best(4.0, "numpy")}, threads=1)  # no PyTorch
    assert "ratio_to_torch" not in alone["step"]["numpy"]["lenet"]["64"]
    table.format_table(alone)


@pytest.mark.parametrize("imported", [True, False])
def test_the_compile_line_says_whether_numba_imported_scipy(imported):
    compile_ = {"cold_compile_s": 4.5, "warm_compile_s": 0.25, "warm_cache_misses": 0}
    compile_ |= {"warm_numba_setup_s": 0.2, "warm_kernels_s": 0.05}
    text = "\n".join(table._compile_lines({"numba_compile": compile_}))
    compile_["warm_scipy_blas_imported"] = imported
    said = "\n".join(table._compile_lines({"numba_compile": compile_}))
    assert "Numba's own start-up 0.20 s" in said and "cnnrun's kernels 0.05 s" in said
    assert ("SciPy's BLAS for np.dot, imported where" in said) is imported
    assert ("SciPy is not installed here" in said) is not imported
    assert "SciPy" not in text and "its registries)" in text  # an older JSON, without the field


def test_the_table_shows_load_libraries_and_the_run(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setattr(libraries, "cpu_flags", lambda: {"avx2", "avx512f"})
    result = fake_result()
    pool = {"internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell"}
    said = {"thread_pools": [pool | {"num_threads": 1, "library": "libopenblas.so"}]}
    result["libraries"] = report.library_report(
        {"numpy": said | {"small_products": 800_000}, "numba": said | {"small_products": None}}
    )
    result["load"] = {"start": [0.5, 0.25, 0.125], "end": [1.5, 1.0, 0.75]}
    run = {"overrides": [], "rounds": 3, "images_per_s": 900.0, "step_images_per_s": 1200.0}
    result["run_versus_step"] = {"numpy": run | {"ratio": 0.75}}
    text = table.format_table(result)
    assert "0.50 0.25 0.12 at the start, 1.50 1.00 0.75 at the end" in text
    assert "Haswell (OPENBLAS_CORETYPE=Haswell)" in text and "SkylakeX" in text
    assert "openblas 0.3.31 Haswell, 1 threads (libopenblas.so)" in text
    assert "0.750" in text and "1,200" in text
    assert (
        "numpy worker  short, wide products (few filters by taps): in blocks of <= 800,000" in text
    )
    assert "numba worker  short, wide products (few filters by taps): one BLAS call each" in text
    assert "OPENBLAS_CORETYPE=Haswell" in text and "NUMBA_CPU_NAME=" in text


# --- what computes the products -------------------------------------------------------------


def test_the_environment_report_lists_what_is_set():
    env = {"OPENBLAS_CORETYPE": "SkylakeX", "OPENBLAS_L2_SIZE": "512", "HOME": "/h"}
    found = libraries.environment(env)
    assert found["OPENBLAS_CORETYPE"] == "SkylakeX" and found["MKL_NUM_THREADS"] == "unset"
    assert list(found)[: len(libraries.ENV_VARIABLES)] == list(libraries.ENV_VARIABLES)
    assert found["OPENBLAS_L2_SIZE"] == "512" and "HOME" not in found  # an OpenBLAS variable
    assert {"DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"} <= set(found)


def test_the_kernel_note():
    pools = [{"internal_api": "openblas", "architecture": "Haswell"}]
    avx512 = libraries.kernel_note(pools, {"avx2", "avx512f"}, {})
    assert "Haswell (OPENBLAS_CORETYPE unset)" in avx512 and "SkylakeX" in avx512
    assert "SkylakeX" not in libraries.kernel_note(pools, {"avx2"}, {})  # nothing better
    skylake = [{"internal_api": "openblas", "architecture": "SkylakeX"}]
    assert "AVX-512" not in libraries.kernel_note(skylake, {"avx512f"}, {})
    assert libraries.kernel_note([{"internal_api": "mkl"}], {"avx512f"}, {}) == ""
    # SciPy's OpenBLAS listed first: the note is on the one NumPy calls
    scipy_own = {"internal_api": "openblas", "architecture": "Zen", "numpy": False}
    numpy_own = {"internal_api": "openblas", "architecture": "SkylakeX", "numpy": True}
    assert "kernel: SkylakeX" in libraries.kernel_note([scipy_own, numpy_own], {"avx512f"}, {})


def test_this_process_s_blas_is_reported():
    pools = libraries.thread_pools()
    blas = [p for p in pools if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] >= 1 and p["library"] for p in blas)
    assert "/" not in blas[0]["library"]  # the file's name, not where it is
    assert [p for p in blas if p["numpy"]]  # the one NumPy calls is marked


def test_onednn_s_log_is_read():
    log = "\n".join(
        [
            "onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost",
            "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32",
            "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,x",
            "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv:avx2,backward_data,x",
        ]
    )
    found = libraries.parse_onednn(log)
    assert found["isa"] == "Intel AVX-512 with Intel DL Boost"
    assert found["convolution"] == {
        "forward_training": "jit:avx512_core",
        "backward_data": "brgconv:avx2",
    }
    assert libraries.parse_onednn("") == {"isa": None, "convolution": {}}


def test_capture_stdout_takes_what_c_code_writes():
    assert libraries.capture_stdout(lambda: os.write(1, b"from fd 1\n")) == "from fd 1\n"


@pytest.mark.torch
def test_torch_info_says_what_convolves(torch):
    found = libraries.torch_info()
    assert found["version"] == torch.__version__ and found["cpu_capability"]
    if found["mkldnn_available"]:  # PyTorch's CPU wheels: oneDNN convolves
        assert found["onednn"]["convolution"] and found["onednn"]["isa"]


def test_load_is_three_averages():
    load = libraries.load()
    assert len(load) == 3 and all(v >= 0 for v in load)


# --- the benchmark -------------------------------------------------------------------------


def test_a_run_against_its_steps(tmp_path, monkeypatch):
    """A small run in a temporary folder: the run's own two throughputs and their ratio."""
    monkeypatch.chdir(tmp_path)
    overrides = ["data=synthetic", "data.num_samples=64", "trainer.max_epochs=1"]
    got = run_versus_step(overrides, rounds=1)
    assert got["images_per_s"] > 0 and got["step_images_per_s"] > got["images_per_s"]
    assert got["ratio"] == pytest.approx(got["images_per_s"] / got["step_images_per_s"])
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


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
    keys = {"step", "layers", "gemm_peak", "numba_compile", "run_versus_step", "libraries"}
    assert keys | {"machine", "settings", "load"} <= set(result)
    impls = {"numpy", "numba"} | ({"torch"} if result["machine"]["torch"] else set())
    assert set(result["step"]) == impls
    for impl in impls:
        assert set(result["step"][impl]) == {"lenet", "vgg_small", "resnet20"}
        assert set(result["step"][impl]["lenet"]) == {"64", "256"}
        assert result["step"][impl]["resnet20"]["64"]["images_per_s"] > 0
        assert set(result["layers"][impl]) == set(convs.LAYERS)
        assert result["layers"][impl]["lenet_conv2"]["forward_percent_of_peak"] > 0
        assert result["gemm_peak"]["gflops"][impl]["blas"] > 0
        assert result["libraries"]["thread_pools"][impl]
    for backend in ("numpy", "numba"):  # as configure_process set it in each worker
        small = gemm.SMALL_WORK if gemm.blas_small_kernel() else None
        assert result["libraries"]["small_products"][backend] == small
    if "torch" in impls:
        assert result["step"]["torch"]["lenet"]["64"]["ratio_to_torch"] == pytest.approx(1.0)
        assert result["libraries"]["torch"]["cpu_capability"]
    for backend in ("numpy", "numba"):
        run = result["run_versus_step"][backend]
        assert run["ratio"] == pytest.approx(run["images_per_s"] / run["step_images_per_s"])
    compile_ = result["numba_compile"]
    assert compile_["cold_compile_s"] > 0 and compile_["warm_cache_misses"] == 0
    # the empty cache had dW's kernels compiled by a second process, the full one did not
    assert compile_["cold_precompile_child"] is precompile.enabled()
    assert compile_["warm"]["precompile_child"] is False
    # Numba's start-up timed apart, then the step from the cache: both parts of the warm time
    split = compile_["warm_setup_apart"]
    assert split["numba_setup_s"] > 0 and split["cache_misses"] == 0 and split["cache_hits"] > 0
    assert compile_["warm_numba_setup_s"] == split["numba_setup_s"]
    assert compile_["warm_kernels_s"] == split["compile_s"]
    assert compile_["warm"]["numba_setup_s"] is None  # the headline step paid the start-up
    # Numba imports SciPy's BLAS at its start exactly where SciPy is installed
    scipy_installed = importlib.util.find_spec("scipy") is not None
    assert compile_["warm_scipy_blas_imported"] is scipy_installed
    assert len(result["load"]["start"]) == 3 and len(result["load"]["end"]) == 3
    assert "OPENBLAS_CORETYPE" in result["libraries"]["environment"]
    texts = ("images/s", "ratio to PyTorch", "GEMM peak", "run / steps", "Machine load")
    for text in (*texts, "Numba's own start-up"):
        assert text in done.stdout
    assert not (tmp_path / "runs").exists()  # the runs were in a temporary folder


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
