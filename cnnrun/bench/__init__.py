"""``python -m cnnrun.bench``: the backends timed against PyTorch on the CPU.

What is timed, in float32:

* a LeNet-5 training step (tanh, average pooling, 1x32x32 inputs, 'valid' convolutions; forward,
  cross-entropy, backward without the input's gradient, an SGD step with momentum) in images/s at
  batch 64 and 256. The network is ``conf/model/lenet.yaml``, built as a run builds it
  (``model=lenet data=mnist data.image_size=32 conv.padding=valid``); PyTorch times its twin,
  the same layers with the same weights;
* four conv layers at batch 64, forward and forward+backward, in ms and GFLOP/s: LeNet's conv1
  (whose backward is dW and db only, as in training: its input is the data) and conv2, and two
  3x3 'same' layers of a VGG-style net. Their x (except conv1's, the data) and dY are laid out
  as the layers around them would hand them over in a network, in the backend's own layout;
* Numba's first-call compile time for a LeNet step, with an empty cache and again (a second
  process, same cache folder) with the cache that the first one wrote.

Each implementation (numpy, numba, and torch when it is installed) runs in its own worker
process with the same number of threads. The parent asks the workers for one timing block at a
time, in turn, for several rounds, and keeps each one's best block: on a machine shared with
other work the rounds spread the noise evenly over the implementations, and the best block is
the one least disturbed. Ratios are to PyTorch: above 1 is faster than PyTorch.

Options: ``--quick`` (fewer and shorter rounds), ``--threads N`` (default: the machine's cores),
``--json PATH`` (default ``bench.json``), ``--impls numpy,numba,torch``.

Modules: :mod:`~cnnrun.bench.cases` (what is timed), :mod:`~cnnrun.bench.twin` (a cnnrun
model in PyTorch), :mod:`~cnnrun.bench.worker` (the timing processes),
:mod:`~cnnrun.bench.report` (figures and table).
"""
