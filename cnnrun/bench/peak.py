"""The ceiling beside each conv layer's GFLOP/s: this machine's float32 GEMM peak, measured in
every worker, as that worker's process is set up (threads, BLAS), in the same rounds as the
other cases.

A square float32 product of :data:`GEMM_N` (2 N^3 operations) three ways:

* ``gemm/matmul`` (the cnnrun workers): :func:`cnnrun.backends.gemm.matmul`, the product as a
  user of a configured process gets it: numpy's BLAS on one thread, the product cut into
  blocks on the run's threads;
* ``gemm/blas`` (every worker): plain numpy ``a @ b`` with numpy's BLAS lifted to the run's
  threads for the call (``threadpoolctl``), what the library alone gives;
* ``gemm/torch`` (the PyTorch worker): ``torch.mm``, PyTorch's own BLAS (MKL in its wheels).

Which BLAS kernel numpy's OpenBLAS picked, and the variable that changes it, is in
:mod:`cnnrun.bench.libraries`: on an AMD Zen 5 (AVX-512) numpy's bundled OpenBLAS 0.3.31 took
its 'Haswell' (AVX2) kernel, about 226 GFLOP/s on 2 threads; with ``OPENBLAS_CORETYPE=SkylakeX``
about 436.

The ceiling is a product's, not a convolution's: in one full run on 2 shared cores (load 1.2
rising to 3.7) ``torch.mm`` gave 153 GFLOP/s while PyTorch's oneDNN convolutions
(``jit:avx512_core``) reached 300-340 on the widest 3x3 layers, so PyTorch's layers can stand
above 100% of their worker's GEMM; cnnrun's, whose convolutions are products, stood at 13-94%.
"""

from __future__ import annotations

import numpy as np

from .nets import Case

GEMM_N = 2048
# the ceiling of each implementation's conv layers: the product its own process gets
CEILINGS = {"numpy": "gemm/matmul", "numba": "gemm/matmul", "torch": "gemm/torch"}


def gemm_names(impl: str) -> list[str]:
    """The GEMM cases of ``impl``'s worker."""
    own = "gemm/torch" if impl == "torch" else "gemm/matmul"
    return [own, "gemm/blas"]


def gemm_flops(n: int = GEMM_N) -> float:
    """Floating-point operations of an (n, n) @ (n, n) product: n^2 sums of n products."""
    return 2.0 * n**3


def operands(n: int = GEMM_N) -> tuple[np.ndarray, np.ndarray]:
    """Two (n, n) float32 matrices, C order, standard-normal from seed 5."""
    rng = np.random.default_rng(5)
    return tuple(rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))


def blas_case(threads: int, n: int = GEMM_N) -> Case:
    """``gemm/blas``: numpy's ``a @ b`` into a kept output, numpy's BLAS at ``threads`` for the
    call only (a cnnrun worker's BLAS has one thread the rest of the time)."""
    from threadpoolctl import ThreadpoolController

    a, b = operands(n)
    out = np.empty_like(a)
    controller = ThreadpoolController()  # made once: the limit itself then costs about 10 us

    def product() -> None:
        with controller.limit(limits=threads, user_api="blas"):
            np.matmul(a, b, out=out)

    return product


def matmul_case(n: int = GEMM_N) -> Case:
    """``gemm/matmul``: :func:`cnnrun.backends.gemm.matmul` on the threads the process was
    configured with."""
    from ..backends import gemm

    a, b = operands(n)
    return lambda: gemm.matmul(a, b)


def torch_case(n: int = GEMM_N) -> Case:
    """``gemm/torch``: ``torch.mm`` into a kept output, on PyTorch's threads."""
    import torch

    a, b = (torch.from_numpy(m) for m in operands(n))
    out = torch.empty_like(a)
    return lambda: torch.mm(a, b, out=out)


def gemm_cases(impl: str, threads: int) -> dict[str, Case]:
    """The GEMM cases of ``impl``'s worker, by name (see :func:`gemm_names`)."""
    own = torch_case() if impl == "torch" else matmul_case()
    return dict(zip(gemm_names(impl), (own, blas_case(threads))))
