"""``python -m cnnrun.bench --logging``: what the TensorBoard dashboard costs a real run.

The default run (or the one the given overrides make) is trained to the end twice per round,
in this process: once with every panel on, once with a dashboard that writes nothing; the
rounds alternate the two, and each side keeps its fastest round. A run's throughput here is
wall-clock: the images it trained over the seconds ``fit()`` took (evaluation and checkpoints
included, start-up excluded).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..run import train as train_module
from ..run.dashboard import Dashboard


class SilentDashboard(Dashboard):
    """A dashboard that measures and writes nothing: the run with logging off."""

    def start(self, trace_text: str) -> None:
        pass

    def measure(self, step: int) -> bool:
        return False

    def step(self, step: int, result) -> None:
        pass

    def epoch_start(self, step: int, lr: float) -> None:
        pass

    def epoch_end(self, step: int, train, val, confusion) -> None:
        pass

    def finish(self, metrics: dict, hyper: dict) -> None:
        pass


def _compose(overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir

    from ..run.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose("config", overrides=[*overrides, f"paths.output_dir={out}"])


def _fit(overrides: list[str], out: Path, silent: bool) -> tuple[float, float]:
    """One whole run: (wall-clock images/s of fit(), images/s inside the steps alone)."""
    cfg = _compose([*overrides, "trainer.progress=false"], out)
    real = train_module.Dashboard
    train_module.Dashboard = SilentDashboard if silent else real
    try:
        trainer = train_module.Trainer(cfg, out)
        start = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - start
    finally:
        train_module.Dashboard = real
    return trainer.images / wall, trainer.images / trainer.train_seconds


def logging_cost(overrides: list[str], rounds: int = 3) -> dict:
    """Both sides' best images/s over ``rounds`` alternating rounds, and their ratio."""
    best = {"on": (0.0, 0.0), "off": (0.0, 0.0)}
    with tempfile.TemporaryDirectory(prefix="cnnrun-logging-") as tmp:
        for r in range(rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for side in order:
                got = _fit(overrides, Path(tmp) / f"{r}-{side}", silent=side == "off")
                best[side] = max(best[side], got)
    on, off = best["on"], best["off"]
    return {
        "overrides": overrides,
        "rounds": rounds,
        "images_per_s": {"logging on": on[0], "logging off": off[0]},
        "step_images_per_s": {"logging on": on[1], "logging off": off[1]},
        "ratio": on[0] / off[0],
    }


def format_logging(result: dict) -> str:
    wall, steps = result["images_per_s"], result["step_images_per_s"]
    what = " ".join(result["overrides"]) or "the default run"
    lines = [
        f"TensorBoard's cost to {what} (best of {result['rounds']} rounds each, wall-clock "
        "of fit(), evaluation and checkpoints included):"
    ]
    for side in ("logging on", "logging off"):
        lines.append(
            f"  {side:<12} {wall[side]:8.0f} images/s   (inside the steps: {steps[side]:.0f})"
        )
    lines.append(f"  on / off     {result['ratio']:8.3f}")
    return "\n".join(lines)
