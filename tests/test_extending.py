"""Extension points: an optimiser is its class and its YAML file, nothing else; a layer joins
model configs by its decorator."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnnrun import nn, optim
from cnnrun.errors import ConfigError
from cnnrun.models import build_model

# a complete new optimiser, as a contributor would add it to cnnrun/optim.py
SIGN_SGD = '''
import numpy as np
from cnnrun import optim

@optim.register("signsgd")
class SignSGD(optim.Optimizer):
    """w = w - lr * sign(grad)."""

    hyper = ("scale",)

    def __init__(self, params, lr: float = 0.01, scale: float = 1.0):
        super().__init__(params, lr)
        if not scale > 0:
            raise optim.ConfigError(f"invalid scale {scale!r}: expected a float > 0")
        self.scale = float(scale)

    def _update(self, p, state):
        p.data -= self.lr * self.scale * np.sign(p.grad)
'''

SIGN_SGD_YAML = """\
defaults:
  - /optim_schema/signsgd@_here_
  - _self_
name: signsgd
lr: 0.002
scale: 0.5
"""


@pytest.mark.slow  # about 1 s: the quick loop stays under a minute
def test_a_new_optimizer_needs_only_its_class_and_its_yaml(tmp_path):
    conf = tmp_path / "my_conf" / "optim"
    conf.mkdir(parents=True)
    (conf / "signsgd.yaml").write_text(SIGN_SGD_YAML)
    out = tmp_path / "run"
    script = SIGN_SGD + textwrap.dedent(f"""
        import json
        from hydra import compose, initialize_config_dir
        from cnnrun.run.config import config_dir
        from cnnrun.run.train import train

        overrides = ["optim=signsgd", "optim.scale=0.25", "conv.padding=same", "data=synthetic",
                     "data.image_size=12", "data.num_samples=64", "data.batch_size=16",
                     "trainer.max_epochs=1", "trainer.progress=false",
                     "hydra.searchpath=[file://{tmp_path / "my_conf"}]",
                     "paths.output_dir={out}"]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        print(json.dumps({{"loss": train(cfg), "scale": cfg.optim.scale}}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["scale"] == 0.25 and np.isfinite(result["loss"])
    checkpoint = out / "checkpoints" / "last.npz"
    with np.load(checkpoint) as saved:
        meta = json.loads(str(saved["meta"]))
    assert meta["optimizer"]["type"] == "SignSGD"
    assert meta["optimizer"]["hyper"]["scale"] == 0.25


def test_every_registered_optimizer_has_its_yaml():
    from cnnrun.run.config import config_dir

    assert set(optim.OPTIMIZERS) == {p.stem for p in (config_dir() / "optim").glob("*.yaml")}


def test_create_builds_from_hyperparameters_and_names_the_accepted_ones():
    params = [nn.Parameter(np.zeros(3), "w")]
    adam = optim.create("adam", params, {"lr": 0.1, "betas": [0.8, 0.9], "unused": 1})
    assert isinstance(adam, optim.Adam) and adam.betas == (0.8, 0.9) and adam.lr == 0.1
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop': expected one of sgd"):
        optim.create("rmsprop", params, {})


def test_a_registered_layer_is_a_model_config_type():
    @nn.register_layer
    class Square(nn.Module):
        def forward(self, x):
            self._x = x
            return x * x

        def backward(self, dy):
            return 2 * self._x * dy

    try:
        spec = {"name": "m", "layers": [{"type": "square"}, {"type": "flatten"}]}
        model = build_model(spec, (1, 2, 3))
        assert isinstance(model["0"], Square)
        assert model.forward(np.full((1, 1, 2, 3), 3.0)).tolist() == [[9.0] * 6]
    finally:
        del nn.LAYERS["square"]
    with pytest.raises(ConfigError, match="unknown layer type 'square'"):
        build_model(spec, (1, 2, 3))
