"""``python -m cnnrun.bench``: the backends timed against PyTorch on the CPU.

What is timed, in float32:

* training steps (forward, cross-entropy, backward without the input's gradient, an SGD step
  with momentum) in images/s, models in training mode as in a run (batch norm on the batch's
  statistics, dropout on): LeNet-5 at batch 64 and 256 (``model=lenet data=mnist
  data.image_size=32 conv.padding=valid``: tanh, average pooling, 'valid' 5x5 convs on
  1x32x32), and ``vgg_small`` and ``resnet20`` at batch 64 on 3x32x32 (``data=cifar10``). Each
  network is its ``conf/model`` file built as a run builds it (no data is read); PyTorch times
  its twin, the same modules with the same weights, residual blocks included
  (:mod:`~cnnrun.bench.twin`);
* eight conv layers at batch 64, forward and forward+backward, in ms and GFLOP/s: LeNet's
  conv1 (whose backward is dW and db only, as in training: its input is the data) and conv2,
  and 3x3 'same' layers of 16->32, 32->64 and 64->64 channels on 32x32 and 16x16 maps. Their
  x (except conv1's, the data) and dY are laid out as the layers around them would hand them
  over in a network, in the backend's own layout;
* the ceiling beside those GFLOP/s: a (2048, 2048) float32 product in every worker, under that
  worker's thread settings: ``cnnrun.backends.gemm.matmul`` (what a configured process gets:
  BLAS on one thread, blocks on the run's threads), plain numpy ``a @ b`` with numpy's BLAS on
  the run's threads, and ``torch.mm``; each layer's GFLOP/s is also given as a % of its own
  worker's product (``gemm.matmul`` for cnnrun, ``torch.mm`` for PyTorch);
* Numba's first-call compile time for a LeNet step, with an empty cache and again (a second
  process, same cache folder) with the cache that the first one wrote;
* the default run (``python -m cnnrun``: LeNet-5 on the embedded digits, the dashboard on) on
  each cnnrun backend, in a temporary folder: its wall-clock images/s (``train/images_per_s``)
  over its steps' own (``train/step_images_per_s``), start-up excluded: what a whole run
  keeps of the steps' speed (:func:`cnnrun.run.logging_cost.run_versus_step`).

Beside the figures: the BLAS library and kernel of each worker's numpy (threadpoolctl),
PyTorch's BLAS and what it convolves with (oneDNN and its ISA, from its verbose log), the
environment variables that change them (:mod:`~cnnrun.bench.libraries`), and the machine's
load averages at the start and the end. On an AMD Zen 5 (AVX-512) numpy's bundled OpenBLAS
0.3.31 picks its 'Haswell' (AVX2) kernel, about 226 GFLOP/s on 2 threads, while
``OPENBLAS_CORETYPE=SkylakeX`` reaches about 436: the table says which kernel ran, and why.

Each implementation (numpy, numba, and torch when it is installed) runs in its own worker
process with the same number of threads. The parent asks the workers for one timing block at a
time, in turn, for several rounds, and keeps each one's best block: on a machine shared with
other work the rounds spread the noise evenly over the implementations, and the best block is
the one least disturbed. Ratios are to PyTorch: above 1 is faster than PyTorch.

Options: ``--quick`` (fewer and shorter rounds, one run per backend), ``--threads N`` (default:
the machine's cores), ``--json PATH`` (default ``runs/bench/<date>_<time>.json``), ``--impls
numpy,numba,torch``; ``--logging [OVERRIDE ...]`` times a whole run with the dashboard on and
off instead (:mod:`cnnrun.run.logging_cost`).

Modules: :mod:`~cnnrun.bench.nets` (the networks and their steps), :mod:`~cnnrun.bench.convs`
(the conv layers), :mod:`~cnnrun.bench.peak` (the GEMM ceiling), :mod:`~cnnrun.bench.cases`
(every case by name), :mod:`~cnnrun.bench.twin` (a cnnrun model in PyTorch),
:mod:`~cnnrun.bench.libraries` (BLAS, oneDNN, environment, load), :mod:`~cnnrun.bench.worker`
(the timing processes), :mod:`~cnnrun.bench.report` (the figures) and
:mod:`~cnnrun.bench.table` (the printed table).
"""
