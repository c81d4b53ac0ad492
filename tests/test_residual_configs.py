"""Residual networks in YAML: resnet20 and plain20 compose and build with the sizes of He et al.;
containers and blocks take their sizes from the shape pass; bad YAML is one line naming the
block; the shape trace shows the split and the merge; the gradient check passes."""

import numpy as np
import pytest
from runner_helpers import compose_config, last_line, run_cnnrun

from cnnrun.errors import CnnrunError, ConfigError, ShapeError
from cnnrun.models import build_model, takes_default_padding
from cnnrun.nn import BatchNorm2d, Conv2d, GlobalAvgPool2d, Residual, Sequential
from cnnrun.run.config import model_spec
from cnnrun.trace import format_markdown, format_report, format_text, shape_trace

# He et al. 2016, table 6: 0.27 M. With zero-padding shortcuts (their option A) the count is
# plain20's; the two 1x1 projections here add 16*32 + 32*64 weights and their batch norms.
PARAMS = {"plain20": 269_722, "resnet20": 269_722 + 16 * 32 + 32 * 64 + 2 * (32 + 64)}
STAGES = {1: (16, 32), 2: (32, 16), 3: (64, 8)}  # stage: (filters, map size) on 32x32


def built(model: str, *overrides: str) -> Sequential:
    cfg = compose_config([f"model={model}", "data=cifar10", *overrides])
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    return build_model(model_spec(cfg), shape, rng=np.random.default_rng(0))


@pytest.mark.parametrize("model", ["resnet20", "plain20"])
def test_the_cifar_networks_have_he_et_al_s_shapes(model):
    net = built(model)
    assert sum(p.data.size for p in net.parameters()) == PARAMS[model]
    blocks = [n for n, _ in net.layers if n.startswith("block")]
    assert blocks == [f"block{s}_{b}" for s in (1, 2, 3) for b in (1, 2, 3)]
    convs = [m for _, m in net.named_modules() if isinstance(m, Conv2d)]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 19  # + fc: the 20 layers
    assert isinstance(net["pool"], GlobalAvgPool2d) and net["fc"].in_features == 64
    outputs = []
    assert net.forward(np.zeros((2, 3, 32, 32), np.float32), outputs=outputs).shape == (2, 10)
    for stage, (filters, size) in STAGES.items():
        assert dict(outputs)[f"block{stage}_3"].shape == (2, filters, size, size), stage
    assert not takes_default_padding(model_spec(compose_config([f"model={model}"])))


def test_plain20_is_resnet20_without_the_shortcuts():
    res, plain = built("resnet20"), built("plain20")
    res_names = [n for n, _ in res.named_parameters()]
    plain_names = [n for n, _ in plain.named_parameters()]
    assert [n for n in res_names if ".shortcut." not in n] == plain_names  # the same tags
    assert {n.split(".")[0] for n in res_names if ".shortcut." in n} == {"block2_1", "block3_1"}
    assert not any(isinstance(m, Residual) for _, m in plain.named_modules())
    identity = res["block1_2"]
    assert isinstance(identity, Residual) and identity.shortcut is None
    proj = res["block2_1.shortcut"]
    assert [type(m) for m in proj] == [Conv2d, BatchNorm2d]
    assert proj[0].stride == (2, 2) and proj[0].kernel_size == (1, 1)
    assert res["block2_1.branch.conv1"].stride == (2, 2)


def test_a_residual_in_yaml_takes_its_sizes_from_the_shape_pass():
    spec = {
        "name": "tiny",
        "layers": [
            {"type": "conv2d", "name": "stem", "out_channels": 3, "kernel_size": 3},
            {
                "type": "residual",
                "name": "res",
                "branch": [
                    {"type": "conv2d", "name": "c", "out_channels": 5, "kernel_size": 3},
                    {"type": "batchnorm2d"},
                ],
                "shortcut": [{"type": "conv2d", "out_channels": 5, "kernel_size": 3}],
            },
            {"type": "sequential", "name": "head", "layers": [{"type": "flatten"}]},
            {"type": "linear", "name": "fc", "out_features": 2},
        ],
    }
    net = build_model(spec, (2, 9, 11), default_padding="valid")
    assert net["res.branch.c"].in_channels == 3 and net["res.branch.1"].num_features == 5
    assert net["res.shortcut.0"].in_channels == 3
    assert net["fc"].in_features == 5 * 5 * 7  # 9x11 -> 7x9 (stem) -> 5x7 (both paths)
    assert net.forward(np.zeros((2, 2, 9, 11), np.float32)).shape == (2, 2)
    assert takes_default_padding(spec)


def res_model(*layers) -> dict:
    return {
        "name": "m",
        "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 1}, *layers],
    }


BAD = {
    "unknown key in a block": (
        res_model({"type": "basic", "name": "b2", "out_channels": 4, "strde": 2}),
        ConfigError,
        ["'strde'", "basic", "layer b2 of model m", "out_channels, stride"],
    ),
    "unknown key in a residual": (
        res_model({"type": "residual", "name": "r", "branch": [{"type": "relu"}], "shortcuts": []}),
        ConfigError,
        ["'shortcuts'", "layer r of model m", "branch, shortcut"],
    ),
    "unknown key inside a branch": (
        res_model(
            {"type": "residual", "name": "r", "branch": [{"type": "relu", "name": "a", "p": 1}]}
        ),
        ConfigError,
        ["'p'", "layer r.branch.a of model m"],
    ),
    "branch and shortcut differ": (
        res_model(
            {
                "type": "residual",
                "name": "r3",
                "branch": [{"type": "conv2d", "out_channels": 8, "kernel_size": 3}],
            }
        ),
        ShapeError,
        ["residual block r3", "(1, 8, 4, 4)", "(1, 4, 6, 6)", "6x6"],
    ),
    "a block after flatten": (
        res_model({"type": "flatten"}, {"type": "basic", "name": "late", "out_channels": 4}),
        ConfigError,
        ["basic", "layer late of model m", "(N, C, H, W)", "(1, 144)"],
    ),
    "a branch the image is too small for": (
        res_model(
            {
                "type": "residual",
                "name": "small",
                "branch": [{"type": "conv2d", "name": "big", "out_channels": 4, "kernel_size": 7}],
            }
        ),
        ShapeError,
        ["small.branch.big", "6x6", "7x7"],
    ),
    "no branch": (
        res_model({"type": "residual", "name": "r", "shortcut": [{"type": "relu"}]}),
        ConfigError,
        ["residual", "layer r of model m", "branch"],
    ),
    "a block without out_channels": (
        res_model({"type": "plain", "name": "p1", "stride": 2}),
        ConfigError,
        ["plain", "layer p1 of model m", "out_channels"],
    ),
    "a dotted name": (
        res_model({"type": "relu", "name": "a.b"}),
        ConfigError,
        ["'a.b'", "model m"],
    ),
}


@pytest.mark.parametrize(
    "channels, stride, projected",
    [(4, 1, False), (4, 2, True), (8, 1, True), (8, 2, True)],
    ids=["same-shape", "stride-only", "channels-only", "both"],
)
def test_a_basic_block_projects_where_its_shape_changes(channels, stride, projected):
    """He et al.'s option B: the identity where the shape stays, else conv1x1 (the stride, the
    filters) and batch norm; a stride alone changes the shape too."""
    spec = {
        "name": "one_block",
        "layers": [{"type": "basic", "name": "b", "out_channels": channels, "stride": stride}],
    }
    net = build_model(spec, (4, 6, 6), default_padding="same")
    names = [name for name, _ in net.named_modules()]
    assert ("b.shortcut.conv" in names) == ("b.shortcut.bn" in names) == projected, names
    if projected:
        conv = net["b.shortcut.conv"]
        assert conv.weight.shape == (channels, 4, 1, 1) and conv.stride == (stride, stride)
    y = net.forward(np.zeros((2, 4, 6, 6), np.float32))
    assert y.shape == (2, channels, 6 // stride, 6 // stride)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_residual_yaml_is_one_line_naming_the_block(case):
    spec, error, words = BAD[case]
    with pytest.raises(error) as err:
        build_model(spec, (1, 6, 6), default_padding="valid")
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, CnnrunError)
    for word in words:
        assert word in text, (word, text)


def trace_resnet(model: str = "resnet20"):
    net = built(model, "data.image_size=8")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    return shape_trace(net, x, rng.integers(0, 10, 4))


def test_the_trace_indents_a_block_s_layers_and_shows_the_merge():
    rows = trace_resnet()
    by_name = {r.name: r for r in rows}
    block, proj = by_name["block1_1"], by_name["block2_1"]
    assert block.type == "Residual" and block.depth == 0
    assert by_name["block1_1.branch.conv1"].depth == 1
    assert [str(p) for p in block.products] == [
        "dX = dX_branch (4,16,8,8) + dX_shortcut (4,16,8,8)"
    ]
    assert [str(p) for p in proj.products] == ["dX = dX_branch (4,16,8,8) + dX_shortcut (4,16,8,8)"]
    assert by_name["block1_1.shortcut"].type == "Identity"
    assert by_name["block2_1.shortcut.conv"].output == (4, 32, 4, 4)
    names = [r.name for r in rows]
    assert names.index("block1_1") < names.index("block1_1.branch.conv1")
    assert names.index("block1_1.branch.bn2") < names.index("block1_1.shortcut")
    text = format_text(rows)
    assert "\n  block1_1.branch.conv1 " in text
    assert "dX = dX_branch (4,16,8,8) + dX_shortcut (4,16,8,8)" in format_markdown(rows)
    assert format_markdown(rows).count("\n") == 2 + len(rows)


def test_the_report_lists_backward_products_in_the_order_they_run():
    rows = trace_resnet()
    report = format_report(rows)
    forward, backward = report.split("Backward")
    assert forward.index("conv1 ") < forward.index("block1_1 ") < forward.index("fc ")
    lines = backward.splitlines()

    def at(start: str, text: str = "") -> int:
        return next(i for i, ln in enumerate(lines) if ln.startswith(start) and text in ln)

    # the last layer first; in a block: the branch (last layer first), the shortcut, the merge
    assert at("fc ") < at("pool ") < at("relu3_3") < at("  block3_3.branch.bn2")
    assert (
        at("  block2_1.branch.bn2") < at("  block2_1.branch.conv1") < at("  block2_1.shortcut.bn")
    )
    assert at("  block2_1.shortcut.conv") < at("block2_1 ", "dX_branch") < at("relu1_3")
    assert at("conv1 ") == max(i for i, ln in enumerate(lines) if ln and not ln.startswith(" "))
    assert "dX = conv_full(" in lines[at("conv1 ") + 1]
    assert all(len(ln) == len(ln.rstrip()) for ln in report.splitlines())


@pytest.mark.slow
def test_gradcheck_passes_on_resnet20(tmp_path):
    result = run_cnnrun(
        ["model=resnet20", "data.image_size=8"],
        tmp_path,
        module="cnnrun.gradcheck",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_line(result.stdout).startswith("ok: largest relative error")
    assert "block2_1.shortcut.conv" in result.stdout


@pytest.mark.slow
def test_the_shapes_command_shows_the_merge(tmp_path):
    result = run_cnnrun(["model=resnet20", "data=cifar10"], tmp_path, module="cnnrun.shapes")
    assert result.returncode == 0, result.stderr
    assert "dX = dX_branch (64,16,32,32) + dX_shortcut (64,16,32,32)" in result.stdout


BAD_USER_MODEL = """\
name: badres
layers:
  - {type: conv2d, name: stem, out_channels: 8, kernel_size: 3, padding: 1}
  - {type: basic, name: down, out_channels: 16, stride: 2}
  - type: residual
    name: wrong
    branch:
      - {type: conv2d, name: c, out_channels: 16, kernel_size: 3, stride: 2, padding: 1}
  - {type: globalavgpool2d}
  - {type: linear, out_features: 4}
"""


@pytest.mark.slow  # a whole `python -m cnnrun` process
def test_a_bad_residual_block_in_a_user_model_is_one_line(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "badres.yaml").write_text(BAD_USER_MODEL)
    args = ["--config-dir", str(tmp_path / "conf"), "model=badres", "data=synthetic"]
    result = run_cnnrun(args, tmp_path)
    assert result.returncode == 2, result.stderr
    line = last_line(result.stderr)
    assert line.startswith("cnnrun: error: ") and "Traceback" not in result.stderr
    for word in ("residual block wrong", "(1, 16, 4, 4)", "(1, 16, 8, 8)", "badres"):
        assert word in line, (word, line)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.npz"))
