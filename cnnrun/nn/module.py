"""Parameters, the layer base class and :class:`Sequential`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..backends import get_backend
from ..errors import CheckpointError, ConfigError


class Parameter:
    """A trainable array and the gradient that ``backward`` adds into.

    ``name`` is the key of the parameter in ``state_dict()`` (``"conv1.weight"`` inside a
    :class:`Sequential`, ``"weight"`` in a bare layer).
    """

    __slots__ = ("name", "data", "grad")

    def __init__(self, data: np.ndarray, name: str = ""):
        self.data = data
        self.grad = np.zeros_like(data)
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"


def fmt_shape(shape) -> str:
    """``(64, 1, 32, 32) -> "(64,1,32,32)"``, the trace's way of writing a shape."""
    return "(" + ",".join(str(s) for s in shape) + ")"


@dataclass
class Product:
    """One backward product, as the shape trace shows it.

    ``dW = corr_valid(x_pad (64,1,36,36), dY (64,6,32,32)) -> (6,1,5,5)``: ``grad`` is what is
    computed, ``op`` how, ``operands`` the ``(label, shape)`` pairs it reads and ``shape`` what
    it gives. For dX of a conv: ``padded`` is the shape after zero rows/columns are added at the
    bottom/right for input pixels that no window reached (a stride that does not divide the
    size), ``cropped`` the shape after the forward padding is cut off.
    """

    grad: str
    op: str
    operands: list[tuple[str, tuple[int, ...]]]
    shape: tuple[int, ...]
    cropped: tuple[int, ...] | None = None
    padded: tuple[int, ...] | None = None

    def __str__(self) -> str:
        args = ", ".join(f"{label} {fmt_shape(shape)}" for label, shape in self.operands)
        text = f"{self.grad} = {self.op}({args}) -> {fmt_shape(self.shape)}"
        last = tuple(self.shape)
        if self.padded is not None and tuple(self.padded) != last:
            text += f", zero-padded to {fmt_shape(self.padded)} (pixels no window reached)"
            last = tuple(self.padded)
        if self.cropped is not None and tuple(self.cropped) != last:
            text += f", cropped to {fmt_shape(self.cropped)}"
        return text


class Module:
    """Base of every layer: ``forward(x) -> y`` keeps what ``backward(dy) -> dx`` needs.

    Subclasses store parameters as :class:`Parameter` attributes listed in ``param_names`` and
    running statistics as arrays listed in ``buffer_names``; ``backward`` *adds* into each
    parameter's ``.grad``, so gradients accumulate until :meth:`zero_grad`.
    """

    param_names: tuple[str, ...] = ()
    buffer_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.name = ""
        self.training = True
        self.backend = "numpy"
        self.tracing = False  # when True, backward records its products (see cnnrun.trace)
        self.products: list = []

    @property
    def kernels(self):
        """The kernel module of this layer's backend (see :mod:`cnnrun.backends`)."""
        return get_backend(self.backend)

    def __getstate__(self) -> dict:
        # copies and pickles leave out what forward cached for backward (``_``-prefixed)
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    # -- forward / backward -------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _forward_cache(self):
        """What forward kept for backward; a clear error where forward has not run."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(
                f"{self.name or type(self).__name__}: backward() called before forward()"
            )
        return cache

    def backward_params(self, dy: np.ndarray) -> None:
        """Only the parameter gradients, for a layer whose input is data (no dX is needed).
        Layers where dX is costly (conv) override this to skip it."""
        self.backward(dy)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # -- the modules inside ------------------------------------------------------------
    def named_children(self) -> list[tuple[str, Module]]:
        """The modules directly inside this one, by name (none for a plain layer)."""
        return []

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``(qualified name, module)`` for this module (named ``prefix``, ``""`` at the root)
        and every module inside it, in network order, a container before what it holds: as
        PyTorch's ``named_modules``. ``"block1_1.branch.conv1"`` is a conv layer in the branch
        of the residual block ``block1_1``."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def get_submodule(self, target: str) -> Module:
        """The module at a dotted path (``"block1_1.branch.conv1"``); ``KeyError`` if none."""
        module = self
        for part in target.split("."):
            children = dict(module.named_children())
            if part not in children:
                raise KeyError(target)
            module = children[part]
        return module

    def _set_names(self, prefix: str = "") -> None:
        """Name every module inside (``.name``) and every parameter (``.name``) by its path
        from here, ``prefix`` being this module's own; a container calls it when it is made."""
        for name, module in self.named_modules(prefix):
            if name:
                module.name = name
        for name, p in self.named_parameters():
            p.name = f"{prefix}.{name}" if prefix else name

    # -- parameters and state -----------------------------------------------------------
    def _own_parameters(self) -> list[tuple[str, Parameter]]:
        return [(n, p) for n in self.param_names if (p := getattr(self, n)) is not None]

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """This module's parameters, then those inside it, keyed by their path from here."""
        inner = [
            (f"{name}.{pn}", p)
            for name, child in self.named_children()
            for pn, p in child.named_parameters()
        ]
        return self._own_parameters() + inner

    def parameters(self) -> list[Parameter]:
        """Every parameter, in network order (the order of :meth:`named_parameters`)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        inner = [
            (f"{name}.{bn}", b)
            for name, child in self.named_children()
            for bn, b in child.named_buffers()
        ]
        return [(n, getattr(self, n)) for n in self.buffer_names] + inner

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of parameters and buffers, keyed and laid out as in PyTorch: a module's own
        parameters, then its own buffers, then each child's, prefixed ``"<child name>."``."""
        state = {n: p.data.copy() for n, p in self._own_parameters()}
        state.update({n: np.array(getattr(self, n), copy=True) for n in self.buffer_names})
        for name, child in self.named_children():
            state.update({f"{name}.{k}": v for k, v in child.state_dict().items()})
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays (NumPy, or anything with ``__array__`` such as torch tensors) in place."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [
            f"{k}: {tuple(np.shape(state[k]))} vs {own[k].shape}"
            for k in own
            if k in state and tuple(np.shape(state[k])) != own[k].shape
        ]
        if wrong or (strict and (missing or unexpected)):
            parts = [
                f"{label}: {', '.join(items)}"
                for label, items in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("shape mismatch (given vs model)", wrong),
                )
                if items
            ]
            raise CheckpointError("state_dict does not fit the model; " + "; ".join(parts))
        self._assign_state({k: np.asarray(v) for k, v in state.items() if k in own})

    def _assign_state(self, state: dict[str, np.ndarray]) -> None:
        for n, p in self._own_parameters():
            if n in state:
                p.data[...] = state[n]
        for n in self.buffer_names:
            if n in state:
                b = getattr(self, n)
                setattr(self, n, np.asarray(state[n]).astype(b.dtype).reshape(b.shape))
        for name, child in self.named_children():
            prefix = name + "."
            child._assign_state(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )

    # -- modes, dtypes, backends (each reaches every module inside) ----------------------
    def train(self, mode: bool = True) -> Module:
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype) -> Module:
        """Cast parameters, gradients and floating buffers to ``dtype`` (like ``.double()``)."""
        dtype = np.dtype(dtype)
        for _, p in self._own_parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        for n in self.buffer_names:
            b = getattr(self, n)
            if np.issubdtype(b.dtype, np.floating):
                setattr(self, n, b.astype(dtype))
        for _, child in self.named_children():
            child.to(dtype)
        return self

    def set_backend(self, name: str) -> Module:
        """Pick the kernels: ``"numpy"`` (default), ``"numba"`` or ``"reference"`` (loops)."""
        get_backend(name)  # validates the name
        self.backend = str(name).lower()
        for _, child in self.named_children():
            child.set_backend(name)
        return self

    # -- display -------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Sequential(Module):
    """Layers applied in order: ``Sequential(*layers)`` or ``Sequential([(name, layer), ...])``.

    Unnamed layers are named by their index, as in ``torch.nn.Sequential``; parameters are
    keyed ``"<layer name>.weight"`` / ``"<layer name>.bias"``, and a layer inside a container
    by its path (``"block1_1.branch.conv1.weight"``, see :meth:`Module.named_modules`).
    ``model["conv1"]``, ``model[0]`` and ``model["block1_1.branch.conv1"]`` find a layer.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], dict):
            items = list(layers[0].items())
        elif len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            items = list(layers[0])
        else:
            items = list(layers)
        self.layers: list[tuple[str, Module]] = []
        for i, item in enumerate(items):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            name = str(name)
            if not isinstance(layer, Module):
                raise ConfigError(
                    f"layer {name!r} is a {type(layer).__name__}, not a cnnrun.nn layer"
                )
            if any(name == n for n, _ in self.layers):
                raise ConfigError(f"duplicate layer name {name!r} in Sequential")
            if not name or "." in name:
                raise ConfigError(
                    f"invalid layer name {name!r}: expected a non-empty name without '.' "
                    "(a dot separates the names of nested layers)"
                )
            self.layers.append((name, layer))
        self._set_names()

    def named_children(self) -> list[tuple[str, Module]]:
        return list(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return (layer for _, layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key: int | str) -> Module:
        if isinstance(key, str):
            return self.get_submodule(key)
        return self.layers[key][1]

    def forward(self, x: np.ndarray, outputs: list | None = None) -> np.ndarray:
        """Every layer in order. ``outputs``, a list, receives each layer's ``(name, y)``:
        what a caller reads to find where a NaN first appeared."""
        for name, layer in self.layers:
            x = layer.forward(x)
            if outputs is not None:
                outputs.append((name, x))
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Back through every layer; returns dX. ``input_grad=False`` (training on data, whose
        gradient nobody reads) lets the first layer skip computing it and returns None."""
        if not self.layers:
            return dy if input_grad else None
        for _, layer in reversed(self.layers[1:]):
            dy = layer.backward(dy)
        first = self.layers[0][1]
        if input_grad:
            return first.backward(dy)
        first.backward_params(dy)
        return None

    def __repr__(self) -> str:
        lines = [f"  ({name}): {layer!r}".replace("\n", "\n  ") for name, layer in self.layers]
        return "Sequential(\n" + "\n".join(lines) + "\n)"
