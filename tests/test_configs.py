"""Every config in conf/ composes with Hydra and builds its model; the schema refuses bad values;
a user's own model joins through ``--config-dir`` or ``hydra.searchpath`` without touching the
package."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from runner_helpers import compose_config, run_cnnrun

from cnnrun.errors import ShapeError
from cnnrun.models import build_model
from cnnrun.nn import BatchNorm2d, Conv2d, Linear
from cnnrun.run.cli import describe
from cnnrun.run.config import config_dir, image_hw, value

MODELS = ["lenet", "mlp", "vgg_small"]
# residual and plain networks: composed and built in test_residual_configs.py
BLOCK_MODELS = ["plain20", "resnet20"]
PADDINGS = ["same", "valid", "full"]
DATA = ["digits", "synthetic", "mnist", "fashion_mnist", "cifar10"]
OPTIMS = ["sgd", "adam"]
BACKENDS = ["numpy", "numba"]

# what each data config says: (channels, image_size, num_classes)
DATA_SHAPES = {
    "digits": (1, 32, 10),
    "synthetic": (1, 16, 4),
    "mnist": (1, 28, 10),
    "fashion_mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
}


def conv_size(n: int, k: int, padding: str) -> int:
    """A stride-1 convolution's output size, written out here independently of the engine."""
    return {"same": n, "valid": n - k + 1, "full": n + k - 1}[padding]


def flat_features(model: str, padding: str, channels: int, size: int) -> int:
    """The input size of the first Linear layer, by hand from the model's YAML."""
    if model == "mlp":
        return channels * size * size
    if model == "vgg_small":  # every conv sets padding: same itself; two 2x2 max pools
        return 32 * (size // 2 // 2) ** 2
    h = conv_size(size, 5, padding) // 2  # lenet: conv1 5x5, avgpool 2
    h = conv_size(h, 5, padding) // 2  # conv2 5x5, avgpool 2
    return 16 * h * h


def check_model(cfg, model_name: str, padding: str, data: str) -> None:
    """``cfg`` holds what was asked for, and its model builds with the right inferred sizes."""
    channels, size, classes = DATA_SHAPES[data]
    assert cfg.model.name == model_name
    assert value(cfg.conv.padding) == padding
    assert value(cfg.data.name) == data
    assert (cfg.data.channels, image_hw(cfg), cfg.data.num_classes) == (
        channels,
        (size, size),
        classes,
    )
    model = build_model(
        cfg.model, (channels, size, size), default_padding=padding, rng=np.random.default_rng(0)
    )
    linears = [layer for layer in model if isinstance(layer, Linear)]
    convs = [layer for layer in model if isinstance(layer, Conv2d)]
    assert linears[0].in_features == flat_features(model_name, padding, channels, size)
    for before, after in zip(linears, linears[1:]):
        assert after.in_features == before.out_features
    assert linears[-1].out_features == classes  # ${data.num_classes} resolved
    if convs:
        assert convs[0].in_channels == channels
        expected = "same" if model_name == "vgg_small" else padding
        assert all(conv.padding == expected for conv in convs)
    for prev, layer in zip(model, list(model)[1:]):
        if isinstance(layer, BatchNorm2d):
            assert isinstance(prev, Conv2d) and layer.num_features == prev.out_channels
    # a real forward pass on a batch of two fits the last layer
    x = np.zeros((2, channels, size, size), np.float32)
    assert model.forward(x).shape == (2, classes)


# every (model, padding) pair once, the data sets and the (optim, backend) pairs in turn, so
# every value of every group is composed and built here; the full product of all five groups
# is test_every_combination_composes (slow)
CASES = [
    (model, padding, DATA[i % len(DATA)])
    for i, (model, padding) in enumerate(itertools.product(MODELS, PADDINGS))
]


@pytest.mark.parametrize("index", range(len(CASES)), ids=["-".join(case) for case in CASES])
def test_config_composes_and_builds(index):
    model_name, padding, data = CASES[index]
    optim, backend = list(itertools.product(OPTIMS, BACKENDS))[index % 4]
    cfg = compose_config(
        [
            f"model={model_name}",
            f"conv.padding={padding}",
            f"data={data}",
            f"optim={optim}",
            f"backend={backend}",
        ]
    )
    assert value(cfg.optim.name) == optim and value(cfg.backend.name) == backend
    check_model(cfg, model_name, padding, data)


@pytest.mark.slow
def test_every_combination_composes():
    combos = list(itertools.product(MODELS, PADDINGS, DATA, OPTIMS, BACKENDS))
    assert len(combos) == 180
    checked = {}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for model_name, padding, data, optim, backend in combos:
            cfg = compose(
                "config",
                overrides=[
                    f"model={model_name}",
                    f"conv.padding={padding}",
                    f"data={data}",
                    f"optim={optim}",
                    f"backend={backend}",
                ],
            )
            assert value(cfg.optim.name) == optim and value(cfg.backend.name) == backend
            # optim and backend leave the model and data alone: build each triple once
            rest = OmegaConf.to_container(cfg, resolve=False)
            key = (model_name, padding, data)
            if key not in checked:
                check_model(cfg, model_name, padding, data)
                checked[key] = {k: rest[k] for k in ("model", "data", "conv")}
            assert {k: rest[k] for k in ("model", "data", "conv")} == checked[key]
    assert len(checked) == len(MODELS) * len(PADDINGS) * len(DATA)  # every triple built


def test_every_group_option_is_tested():
    """The lists above are every file in conf/: a new config is composed by these tests too."""
    root = config_dir()
    for group, names in (
        ("model", MODELS + BLOCK_MODELS),
        ("data", DATA),
        ("optim", OPTIMS),
        ("backend", BACKENDS),
    ):
        assert sorted(p.stem for p in (root / group).glob("*.yaml")) == sorted(names), group


def test_defaults_compose_and_resolve():
    cfg = compose_config()
    assert (
        cfg.model.name,
        value(cfg.data.name),
        value(cfg.optim.name),
        value(cfg.backend.name),
        value(cfg.conv.padding),
    ) == ("lenet", "digits", "sgd", "numpy", "valid")
    # everything but the Hydra-only run folder resolves
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain["paths"]["output_dir"] = "x"
    assert OmegaConf.create(plain).model.layers[-1].out_features == 10


@pytest.mark.parametrize(
    "model_name, padding, size, layer",
    [
        ("lenet", "valid", 8, "conv2"),  # 8 -> 4 -> 2: smaller than conv2's 5x5 kernel
        ("lenet", "valid", 4, "conv1"),  # smaller than conv1's kernel at once
    ],
)
def test_image_too_small_for_valid_convs(model_name, padding, size, layer):
    cfg = compose_config(
        [
            f"model={model_name}",
            f"conv.padding={padding}",
            "data=synthetic",
            f"data.image_size={size}",
        ]
    )
    with pytest.raises(ShapeError) as err:
        build_model(cfg.model, (1, *image_hw(cfg)), default_padding=padding)
    message = str(err.value)
    assert f"{layer}:" in message and model_name in message and f"1x{size}x{size}" in message
    assert "5x5" in message


@pytest.mark.parametrize("size, fits", [(15, False), (16, True)])
def test_lenet_valid_smallest_image(size, fits):
    """16x16 is the smallest square image lenet fits under 'valid': 16 -> 12 -> 6 -> 2 -> 1."""
    cfg = compose_config(
        ["model=lenet", "conv.padding=valid", "data=synthetic", f"data.image_size={size}"]
    )
    if fits:
        model = build_model(cfg.model, (1, size, size), default_padding="valid")
        assert model["fc1"].in_features == 16
    else:
        with pytest.raises(ShapeError):
            build_model(cfg.model, (1, size, size), default_padding="valid")


def test_non_square_image_sizes_infer_linear_size():
    cfg = compose_config(
        ["model=lenet", "conv.padding=full", "data=synthetic", "data.image_size=[20,28]"]
    )
    assert image_hw(cfg) == (20, 28)
    model = build_model(cfg.model, (1, 20, 28), default_padding="full")
    # H: 20 -> 24 -> 12 -> 16 -> 8; W: 28 -> 32 -> 16 -> 20 -> 10
    assert model["fc1"].in_features == 16 * 8 * 10


# -- the schema: every enum and every config group refuses a value it does not know -----------


@pytest.mark.parametrize(
    "override, key, accepted",
    [
        ("conv.padding=smae", "conv.padding", "same, valid, full"),
        ("backend.name=tpu", "backend.name", "numpy, numba"),
        ("data.name=imagenet", "data.name", "digits, mnist, fashion_mnist, cifar10, synthetic"),
        ("optim.name=rmsprop", "optim.name", "sgd, adam"),
        ("optim.schedule=linear", "optim.schedule", "none, step, cosine"),
        ("trainer.on_nan=ignore", "trainer.on_nan", "stop, skip"),
    ],
)
def test_schema_enum_rejects_bad_value(override, key, accepted):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    bad = override.split("=", 1)[1]
    # then a close match where there is one ("; did you mean same?")
    assert describe(err.value).startswith(f"invalid {key} '{bad}': expected one of {accepted}")


@pytest.mark.parametrize(
    "override, group, accepted",
    [
        ("model=resnet", "model", "lenet, mlp, plain20, resnet20, vgg_small"),
        ("backend=tpu", "backend", "numba, numpy"),
        ("data=imagenet", "data", "cifar10, digits, fashion_mnist, mnist, synthetic"),
        ("optim=rmsprop", "optim", "adam, sgd"),
    ],
)
def test_unknown_group_option_is_refused(override, group, accepted):
    with pytest.raises(MissingConfigException) as err:
        compose_config([override])
    bad = override.split("=", 1)[1]
    message = describe(err.value)  # then a close match where there is one
    assert message.startswith(f"unknown {group} '{bad}': expected one of {accepted}")


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=abc", "seed"),
        ("data.batch_size=big", "data.batch_size"),
        ("optim.lr=fast", "optim.lr"),
    ],
)
def test_schema_types_reject_bad_value(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    bad = override.split("=", 1)[1]
    assert describe(err.value).startswith(f"invalid {key} '{bad}': expected ")


# -- a user's own model, outside the package ----------------------------------------------------

MYNET = """\
name: mynet
layers:
  - {type: conv2d, name: c1, out_channels: 4, kernel_size: 3}
  - {type: relu}
  - {type: maxpool2d, kernel_size: 2}
  - {type: flatten}
  - {type: linear, name: head, out_features: "${data.num_classes}"}
"""


@pytest.fixture
def user_conf(tmp_path):
    folder = tmp_path / "my_conf"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "mynet.yaml").write_text(MYNET)
    return folder


def test_user_model_through_searchpath(user_conf):
    overrides = [
        f"hydra.searchpath=[file://{user_conf}]",
        "model=mynet",
        "data=synthetic",
        "data.image_size=12",
    ]
    for padding, side in (("valid", 5), ("same", 6), ("full", 7)):  # 12 +- 2, then // 2
        cfg = compose_config([*overrides, f"conv.padding={padding}"])
        assert cfg.model.name == "mynet"
        model = build_model(cfg.model, (1, 12, 12), default_padding=padding)
        assert model["c1"].padding == padding
        assert model["head"].weight.data.shape == (4, 4 * side * side)
    assert not (config_dir() / "model" / "mynet.yaml").exists()
    # the package's own models are still there beside it
    assert compose_config([*overrides[:1], "model=lenet"]).model.name == "lenet"


@pytest.mark.slow  # a whole `python -m cnnrun` process
def test_user_model_through_config_dir_command_line(user_conf, tmp_path):
    before = sorted(p.name for p in (config_dir() / "model").iterdir())
    result = run_cnnrun(
        [
            "--config-dir",
            str(user_conf),
            "model=mynet",
            "data=synthetic",
            "data.image_size=12",
            "data.num_samples=64",
            "data.batch_size=16",
            "trainer.max_epochs=1",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run,) = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.model.name == "mynet"
    assert [layer["name"] for layer in saved.model.layers if "name" in layer] == ["c1", "head"]
    trace = (run / "shape_trace.md").read_text()
    assert "(16,1,12,12)" in trace and "(16,4,10,10)" in trace and "(16,100)" in trace
    assert (run / "checkpoints" / "last.npz").is_file()
    assert sorted(p.name for p in (config_dir() / "model").iterdir()) == before


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_user_model_shape_trace_through_config_dir(user_conf, tmp_path):
    result = run_cnnrun(
        [
            "--config-dir",
            str(user_conf),
            "model=mynet",
            "data=synthetic",
            "data.image_size=12",
            "data.batch_size=8",
            "conv.padding=same",
        ],
        cwd=tmp_path,
        module="cnnrun.shapes",
    )
    assert result.returncode == 0, result.stderr
    lines = [ln.strip() for ln in result.stdout.splitlines()]
    assert "dW = corr_valid(x_pad (8,1,14,14), dY (8,4,12,12)) -> (4,1,3,3)" in lines
    assert (
        "dX = conv_full(dY (8,4,12,12), W (4,1,3,3)) -> (8,1,14,14), cropped to (8,1,12,12)"
    ) in lines
    assert any(ln.startswith("head") and "(8,144) -> (8,4)" in ln for ln in lines), lines


def test_missing_config_dir_is_one_line(tmp_path):
    result = run_cnnrun(
        ["--config-dir", str(tmp_path / "nowhere"), "model=lenet"],
        cwd=tmp_path,
        module="cnnrun.shapes",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("cnnrun: error: --config-dir")
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
