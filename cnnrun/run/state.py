"""Where a run stands, in one typed place: what a checkpoint saves and restores as a whole.

With the shuffling RNG's state at the start of the epoch, ``epoch``, ``batch`` and ``step`` are
enough to continue a run stopped between any two steps with exactly the numbers of an
uninterrupted one: the resumed run replays the epoch's shuffle and skips the batches it has
already trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpochSums:
    """The epoch so far: ``loss * n`` and ``accuracy * n`` summed over its batches, and n."""

    loss: float = 0.0
    correct: float = 0.0
    seen: int = 0

    def add(self, loss: float, acc: float, n: int) -> None:
        self.loss += loss * n
        self.correct += acc * n
        self.seen += n

    def means(self) -> tuple[float, float]:
        """The epoch's average train loss and accuracy (NaN before its first batch)."""
        if not self.seen:
            return math.nan, math.nan
        return self.loss / self.seen, self.correct / self.seen


@dataclass
class RunState:
    """A run's position and everything random about it.

    ``epoch`` is 0-based, the one in progress; ``batch`` the next batch of that epoch; ``step``
    the optimiser steps so far. ``init_rng`` draws the weights and then the dropout masks,
    ``shuffle_rng`` the order of the batches, ``augment_rng`` the crops and flips of
    ``data.augment``; ``epoch_start`` is ``shuffle_rng``'s state when the current epoch began.
    """

    init_rng: np.random.Generator
    shuffle_rng: np.random.Generator
    augment_rng: np.random.Generator
    epoch_start: dict = field(default_factory=dict)
    epoch: int = 0
    batch: int = 0
    step: int = 0
    skipped: int = 0
    skips_in_a_row: int = 0
    best_val_loss: float = math.inf
    val_loss: float = math.nan
    val_acc: float = math.nan
    sums: EpochSums = field(default_factory=EpochSums)

    @classmethod
    def fresh(cls, seed: int) -> RunState:
        """Step 0 of a run: independent streams spawned from one seed (the first two are
        those of the runs before augmentation existed: spawned children depend on their
        index only)."""
        init_rng, shuffle_rng, augment_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )
        return cls(init_rng, shuffle_rng, augment_rng, shuffle_rng.bit_generator.state)

    def start_epoch(self) -> None:
        """A fresh epoch: remember where its shuffle starts and reset its sums."""
        self.epoch_start = self.shuffle_rng.bit_generator.state
        self.sums = EpochSums()

    def end_epoch(self, val_loss: float, val_acc: float) -> bool:
        """Record the epoch's validation; the state then points at the next epoch's start.
        Returns whether the validation loss is the best so far."""
        self.val_loss, self.val_acc = val_loss, val_acc
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        self.epoch += 1
        self.batch = 0
        self.epoch_start = self.shuffle_rng.bit_generator.state
        return improved

    def to_meta(self) -> dict:
        """The checkpoint's ``meta`` entries (JSON values)."""
        s = self.sums
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "skipped": self.skipped,
            "skips_in_a_row": self.skips_in_a_row,
            "sums": [s.loss, s.correct, s.seen],
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "rng": {
                "init": self.init_rng.bit_generator.state,
                "epoch_start": self.epoch_start,
                "augment": self.augment_rng.bit_generator.state,  # now, not at the epoch's start
            },
        }

    def load_meta(self, meta: dict) -> None:
        """Restore what :meth:`to_meta` saved; the shuffle restarts at the epoch's start."""
        self.epoch, self.batch, self.step = meta["epoch"], meta["batch"], meta["step"]
        self.best_val_loss, self.skipped = meta["best_val_loss"], meta["skipped"]
        self.skips_in_a_row = meta.get("skips_in_a_row", 0)
        self.sums = EpochSums(*meta["sums"])
        self.val_loss, self.val_acc = meta["val_loss"], meta["val_acc"]
        self.init_rng.bit_generator.state = meta["rng"]["init"]
        self.shuffle_rng.bit_generator.state = meta["rng"]["epoch_start"]
        self.epoch_start = meta["rng"]["epoch_start"]
        self.augment_rng.bit_generator.state = meta["rng"]["augment"]
