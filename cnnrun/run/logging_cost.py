"""``python -m cnnrun.bench --logging``: what the TensorBoard dashboard costs a real run.

The default run (or the one the given overrides make) is trained to the end twice per round,
in this process: once with every panel on, once with a dashboard that writes nothing; the
rounds alternate the two, and each side keeps its fastest round. A run's throughput here is
wall-clock: the images it trained over the seconds ``fit()`` took (evaluation and checkpoints
included, start-up excluded). On a shared machine the two runs' difference is noisy (it can
even come out above 1), so the logging-on runs also time the dashboard's own calls: the
share of ``fit()`` they take is the cost measured directly (what it leaves out: the copy of
the weights and the pass over the activations of the steps that measure the gradient flow).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from . import train as train_module
from .dashboard import Dashboard


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

    def finish(self, metrics: dict) -> None:
        pass


class TimedDashboard(Dashboard):
    """The real dashboard, with the seconds spent in its calls added up in ``seconds``."""

    seconds = 0.0

    def _timed(self, method: str, *args):
        start = time.perf_counter()
        try:
            return getattr(super(), method)(*args)
        finally:
            TimedDashboard.seconds += time.perf_counter() - start

    def start(self, trace_text):
        return self._timed("start", trace_text)

    def step(self, step, result):
        return self._timed("step", step, result)

    def epoch_start(self, step, lr):
        return self._timed("epoch_start", step, lr)

    def epoch_end(self, step, train, val, confusion):
        return self._timed("epoch_end", step, train, val, confusion)

    def finish(self, metrics):
        return self._timed("finish", metrics)

    def flush(self):
        return self._timed("flush")


def _compose(overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir

    from .config import config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose("config", overrides=[*overrides, f"paths.output_dir={out}"])


def _fit(overrides: list[str], out: Path, silent: bool) -> tuple[float, float, float]:
    """One whole run: (wall-clock images/s of fit(), images/s inside the steps alone, the
    share of fit() spent in the dashboard's calls)."""
    cfg = _compose([*overrides, "trainer.progress=false"], out)
    real = train_module.Dashboard
    train_module.Dashboard = SilentDashboard if silent else TimedDashboard
    TimedDashboard.seconds = 0.0
    try:
        trainer = train_module.Trainer(cfg, out)
        start = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - start
    finally:
        train_module.Dashboard = real
    share = 0.0 if silent else TimedDashboard.seconds / wall
    return trainer.images / wall, trainer.images / trainer.train_seconds, share


def logging_cost(overrides: list[str], rounds: int = 3) -> dict:
    """Both sides' best images/s over ``rounds`` alternating rounds, and their ratio."""
    best = {"on": (0.0, 0.0, 0.0), "off": (0.0, 0.0, 0.0)}
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
        "dashboard_share": on[2],
        "ratio_direct": 1.0 - on[2],
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
    lines.append(
        f"  the dashboard's own calls: {result['dashboard_share']:.1%} of fit() "
        f"(on / off measured directly: {result['ratio_direct']:.3f})"
    )
    return "\n".join(lines)
