"""Data augmentation for natural images: the standard CIFAR recipe (He et al. 2016).

Each training image is padded with 4 pixels of zeros on every side and cropped back to its
size at a random offset, then flipped left to right with probability 1/2. The images are
already standardised, so the zeros are the training set's mean colour. Every number comes from
the ``rng`` passed in (the run's own augmentation stream), never from a global one: a run
repeats bit for bit. Applied to training batches only, never to validation or test.
"""

from __future__ import annotations

import numpy as np

PAD = 4


def random_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = PAD) -> np.ndarray:
    """``(N, C, H, W)`` images, each randomly cropped from its ``pad``-padded self and flipped
    with probability 1/2; ``x`` is left as it was."""
    n, _, h, w = x.shape
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))  # (dy, dx) in [0, 2 * pad]
    flips = rng.random(n) < 0.5
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(x)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out[i] = crop[:, :, ::-1] if flip else crop
    return out
