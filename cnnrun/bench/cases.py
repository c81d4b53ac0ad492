"""What the benchmark times, every case as a callable, on a cnnrun backend or in PyTorch: the
networks' training steps (:mod:`~cnnrun.bench.nets`), the single conv layers
(:mod:`~cnnrun.bench.convs`) and the GEMM ceiling (:mod:`~cnnrun.bench.peak`).

Case names: ``step/<network>/<batch>``, ``forward/<layer>``, ``forward_backward/<layer>``,
``gemm/<how>``. Every implementation has the steps and the layers; the GEMM cases differ (the
cnnrun workers time ``gemm.matmul``, the PyTorch one ``torch.mm``; all time numpy's BLAS), and
come last in a turn, so that the BLAS threads they wake settle in the pause before the next
worker's turn.
"""

from __future__ import annotations

from .convs import KINDS, LAYERS, cnnrun_conv, torch_conv
from .nets import STEPS, Case, cnnrun_step, step_name, torch_step
from .peak import gemm_cases, gemm_names


def shared_names() -> list[str]:
    """The cases every implementation has: the steps, then the conv layers."""
    steps = [step_name(net, batch) for net, batch in STEPS]
    return steps + [f"{kind}/{name}" for name in LAYERS for kind in KINDS]


def case_names(impl: str) -> list[str]:
    """Every case of ``impl``, in the order the parent asks for them."""
    return shared_names() + gemm_names(impl)


def cnnrun_cases(backend: str, threads: int) -> dict[str, Case]:
    """Callables for every case, on a cnnrun backend in a process configured for ``threads``."""
    cases = {step_name(net, batch): cnnrun_step(backend, batch, net) for net, batch in STEPS}
    for name in LAYERS:
        cases.update(cnnrun_conv(backend, name))
    return cases | gemm_cases(backend, threads)


def torch_cases(threads: int) -> dict[str, Case]:
    """The same cases in PyTorch, on ``threads`` threads."""
    cases = {step_name(net, batch): torch_step(batch, net) for net, batch in STEPS}
    for name in LAYERS:
        cases.update(torch_conv(name))
    return cases | gemm_cases("torch", threads)
