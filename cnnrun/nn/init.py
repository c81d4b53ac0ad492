"""Weight initialisation from a caller's ``numpy.random.Generator`` (never the global RNG).

``fan_in = C_in * kh * kw`` (conv) or ``in_features`` (linear); ``fan_out`` likewise with the
output size. Schemes:

* ``default``: PyTorch's Conv2d/Linear default, ``kaiming_uniform_(a=sqrt(5))``, which is
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the weight, and the same bound for the bias.
* ``he_normal`` / ``he_uniform`` (He et al. 2015): std ``sqrt(2 / fan_in)``; bias 0.
* ``xavier_uniform`` / ``xavier_normal`` (Glorot & Bengio 2010): variance
  ``2 / (fan_in + fan_out)``.
* ``lecun_normal`` / ``lecun_uniform`` (LeCun et al. 1998): variance ``1 / fan_in``.

Aliases: ``he`` and ``kaiming`` = ``he_normal``, ``xavier`` and ``glorot`` = ``xavier_uniform``,
``lecun`` = ``lecun_normal``. Values are drawn in float64 and cast, so a float32 and a float64
model from the same seed hold the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

# scheme -> (distribution, variance as a function of fan_in, fan_out); None = PyTorch's default
SCHEMES = {
    "default": None,
    "he_normal": ("normal", lambda fi, fo: 2.0 / fi),
    "he_uniform": ("uniform", lambda fi, fo: 2.0 / fi),
    "xavier_uniform": ("uniform", lambda fi, fo: 2.0 / (fi + fo)),
    "xavier_normal": ("normal", lambda fi, fo: 2.0 / (fi + fo)),
    "lecun_normal": ("normal", lambda fi, fo: 1.0 / fi),
    "lecun_uniform": ("uniform", lambda fi, fo: 1.0 / fi),
}
ALIASES = {
    "he": "he_normal",
    "kaiming": "he_normal",
    "xavier": "xavier_uniform",
    "glorot": "xavier_uniform",
    "lecun": "lecun_normal",
}


def scheme_name(scheme: str) -> str:
    key = ALIASES.get(str(scheme).lower(), str(scheme).lower())
    if key not in SCHEMES:
        names = ", ".join([*SCHEMES, *ALIASES])
        raise ConfigError(f"unknown init {scheme!r}: expected one of {names}")
    return key


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in) or (out, in, kh, kw)."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def init_weight_and_bias(weight, bias, scheme: str, rng: np.random.Generator | None) -> None:
    """Fill the ``.data`` of a weight Parameter (and an optional bias Parameter) in place."""
    rng = np.random.default_rng() if rng is None else rng
    key = scheme_name(scheme)
    fan_in, fan_out = fans(weight.data.shape)
    if key == "default":
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        weight.data[...] = rng.uniform(-bound, bound, weight.data.shape)
        if bias is not None:
            bias.data[...] = rng.uniform(-bound, bound, bias.data.shape)
        return
    dist, variance = SCHEMES[key]
    std = math.sqrt(variance(fan_in, fan_out))
    if dist == "normal":
        weight.data[...] = rng.normal(0.0, std, weight.data.shape)
    else:  # a uniform U(-a, a) has variance a^2 / 3
        bound = math.sqrt(3.0) * std
        weight.data[...] = rng.uniform(-bound, bound, weight.data.shape)
    if bias is not None:
        bias.data[...] = 0


def initialize(model, scheme: str = "default", rng: np.random.Generator | None = None):
    """Re-initialise every Conv2d and Linear of ``model`` (those inside containers too, in
    network order) with ``scheme``; returns the model."""
    rng = np.random.default_rng() if rng is None else rng
    for _, layer in model.named_modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters(rng, scheme)
    return model
