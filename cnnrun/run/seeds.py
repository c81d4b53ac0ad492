"""A sweep over seeds, summarised per setting: is a difference larger than seed noise?

When the jobs of a sweep differ in ``seed``, the jobs that differ *only* in their seed form a
setting. Per setting: how many seeds finished (and failed), and the mean and the sample
standard deviation (n - 1 in the denominator; empty for a single seed) of ``val/loss``,
``val/acc`` and ``test/acc`` over the finished ones, best mean ``val/loss`` first.
"""

from __future__ import annotations

import csv
import io
import math
import statistics

SUMMARISED = ("val/loss", "val/acc", "test/acc")
FILE = "summary_by_setting.csv"


def _seed(override: str) -> bool:
    return override.lstrip("+").startswith("seed=")


def _seed_of(row: dict) -> str | None:
    found = [o.lstrip("+").split("=", 1)[1] for o in row["overrides"].split() if _seed(o)]
    return found[-1] if found else None


def _setting(row: dict) -> str:
    """The job's overrides without its seed, in a fixed order (``a=1 b=2`` is ``b=2 a=1``)."""
    return " ".join(sorted(o.lstrip("+") for o in row["overrides"].split() if not _seed(o)))


def varies_seed(rows: list[dict]) -> bool:
    """Whether the jobs were run with more than one seed."""
    return len({_seed_of(r) for r in rows}) > 1


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def by_setting(rows: list[dict]) -> list[dict]:
    """One row per setting (its overrides without the seed), best mean val/loss first."""
    groups: dict[str, dict[str | None, dict]] = {}
    for r in rows:  # a seed run twice (an Optuna search can): counted once, its first finish
        by_seed, seed = groups.setdefault(_setting(r), {}), _seed_of(r)
        if seed not in by_seed or by_seed[seed]["status"] != "ok":
            by_seed[seed] = r
    out = []
    for setting, per_seed in groups.items():
        jobs = list(per_seed.values())
        ok = [j for j in jobs if j["status"] == "ok"]
        row = {"setting": setting, "seeds": len(ok), "failed": len(jobs) - len(ok)}
        for m in SUMMARISED:
            values = [v for v in (_number(j[m]) for j in ok) if v is not None]
            row[f"{m} mean"] = statistics.fmean(values) if values else math.nan
            row[f"{m} std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        out.append(row)
    loss = "val/loss mean"
    return sorted(out, key=lambda r: (math.isnan(r[loss]), r[loss], r["setting"]))


def to_csv(settings: list[dict]) -> str:
    buf = io.StringIO()
    names = [
        "setting",
        "seeds",
        "failed",
        *(f"{m} {s}" for m in SUMMARISED for s in ("mean", "std")),
    ]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in settings
    )
    return buf.getvalue()


def to_table(settings: list[dict]) -> str:
    """The settings as text: ``mean ± std`` per figure; only what differs between settings."""
    shared = set.intersection(*(set(r["setting"].split()) for r in settings))

    def pm(r, m):
        mean, std = r[f"{m} mean"], r[f"{m} std"]
        if math.isnan(mean):
            return "-"
        return f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")

    head = ["#", "seeds", *SUMMARISED, "setting"]
    body = [
        [
            str(i + 1),
            str(r["seeds"]) + (f" ({r['failed']} failed)" if r["failed"] else ""),
            *(pm(r, m) for m in SUMMARISED),
            " ".join(o for o in r["setting"].split() if o not in shared) or "(all)",
        ]
        for i, r in enumerate(settings)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]
    )
