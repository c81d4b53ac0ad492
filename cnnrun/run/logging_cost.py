"""``python -m cnnrun.bench --logging``: what the TensorBoard dashboard costs a real run.

The default run (or the one the given overrides make) is trained to the end twice per round,
in this process: once with every panel on, once with a dashboard that writes nothing; the
rounds alternate the two, and each side keeps its fastest round. A run's throughput here is
wall-clock: the images it trained over the seconds ``fit()`` took (evaluation and checkpoints
included, start-up excluded). On a shared machine the two runs' difference is noisy (it can
even come out above 1), so the logging-on runs also time the dashboard's own calls: the
share of ``fit()`` they take is the cost measured directly (what it leaves out: the copy of
the weights and the pass over the activations of the steps that measure the gradient flow).

:func:`run_versus_step` (``python -m cnnrun.bench``'s last figures) times a plain run the same
way, the real dashboard on: what share of the steps' own speed a whole run keeps.
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


def fit_speed(overrides: list[str], out: Path, dashboard: type[Dashboard] | None = None) -> dict:
    """One whole run in ``out``, trained to the end, with ``dashboard`` in place of the real
    one (None: the real one, as a plain run has it). Its throughput, start-up excluded:
    ``fit_images_per_s``, the images trained over the seconds ``fit()`` took;
    ``images_per_s`` and ``step_images_per_s``, the run's own ``train/images_per_s`` (the
    epochs' loop, wall-clock) and ``train/step_images_per_s`` (inside the steps alone); and,
    with a :class:`TimedDashboard`, ``dashboard_share``, the share of ``fit()`` in its calls."""
    cfg = _compose([*overrides, "trainer.progress=false"], out)
    real = train_module.Dashboard
    train_module.Dashboard = dashboard or real
    TimedDashboard.seconds = 0.0
    try:
        trainer = train_module.Trainer(cfg, out)
        start = time.perf_counter()
        metrics = trainer.fit()
        wall = time.perf_counter() - start
    finally:
        train_module.Dashboard = real
    return {
        "fit_images_per_s": trainer.images / wall,
        "images_per_s": metrics["train/images_per_s"],
        "step_images_per_s": metrics["train/step_images_per_s"],
        "dashboard_share": TimedDashboard.seconds / wall if dashboard is TimedDashboard else 0.0,
    }


def _fit(overrides: list[str], out: Path, silent: bool) -> tuple[float, float, float]:
    """(wall-clock images/s of fit(), images/s inside the steps alone, the dashboard's share)
    of one run with logging on (a :class:`TimedDashboard`) or off."""
    got = fit_speed(overrides, out, SilentDashboard if silent else TimedDashboard)
    return got["fit_images_per_s"], got["step_images_per_s"], got["dashboard_share"]


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


def run_versus_step(overrides: list[str], rounds: int = 3) -> dict:
    """A plain run (the default one, or the one ``overrides`` make; the real dashboard on),
    ``rounds`` times in a temporary folder: the round with the most wall-clock images/s, as
    the run reports them (``train/images_per_s``, ``train/step_images_per_s``), and
    ``ratio``, the first over the second: the share of the steps' speed that a whole run
    keeps once evaluation, logging and checkpoints are counted."""
    best: dict = {}
    with tempfile.TemporaryDirectory(prefix="cnnrun-run-speed-") as tmp:
        for r in range(rounds):
            got = fit_speed(overrides, Path(tmp) / str(r))
            if not best or got["images_per_s"] > best["images_per_s"]:
                best = got
    return {
        "overrides": overrides,
        "rounds": rounds,
        "images_per_s": best["images_per_s"],
        "step_images_per_s": best["step_images_per_s"],
        "fit_images_per_s": best["fit_images_per_s"],
        "ratio": best["images_per_s"] / best["step_images_per_s"],
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
