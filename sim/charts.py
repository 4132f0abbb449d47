"""Charts of a simulation (matplotlib, Agg): regret.png / regret.svg and allocation.png."""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.run import SimResult

DAY = 86400
COLOURS = {"bandit": "#1f77b4", "fixed_soft": "#d62728", "uniform": "#7f7f7f"}


def write_charts(result: "SimResult", out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, Path] = {}
    names = list(result.segments)
    policies = ["bandit", "fixed_soft"]
    if result.fixed_best_tone != "soft":
        policies.append(f"fixed_{result.fixed_best_tone}")
    policies.append("uniform")

    panels = names + ["overall"]
    columns = 3
    rows_n = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(5 * columns, 3.6 * rows_n), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        rows = result.rows if panel == "overall" else [r for r in result.rows
                                                       if r["segment"] == panel]
        for policy in policies:
            curve = list(accumulate(r["regret"][policy] for r in rows))
            label = {"bandit": "bandit (Thompson)", "fixed_soft": "always soft",
                     "uniform": "uniform random"}.get(policy, f"always {policy[6:]} (best fixed)")
            ax.plot(range(1, len(curve) + 1), curve, label=label,
                    color=COLOURS.get(policy, "#2ca02c"),
                    linestyle="--" if policy.startswith("fixed_") and policy != "fixed_soft"
                    else "-")
        title = panel if panel == "overall" else \
            f"{panel} (best: {result.segments[panel].best_tone})"
        ax.set_title(title)
        ax.set_xlabel("bandit messages")
        ax.set_ylabel("cumulative regret (expected successes lost)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Tone regret over {result.parameters['weeks']} simulated weeks "
                 f"({result.parameters['debtors_per_week']} debtors a week, seed "
                 f"{result.parameters['seed']})")
    fig.tight_layout()
    for suffix in ("png", "svg"):
        path = out / f"regret.{suffix}"
        fig.savefig(path, dpi=110)
        files[f"regret.{suffix}"] = path
    plt.close(fig)

    # The bandit's share of the best tone: its allocation (as logged when it changed) and the
    # share of its actual picks per simulated week.
    start = _start(result)
    fig, ax = plt.subplots(figsize=(10, 5))
    cmap = plt.get_cmap("tab10")
    for index, name in enumerate(names):
        best = result.segments[name].best_tone
        log = [(e["at"], e["allocation"][best]) for e in result.allocation_log
               if e["segment"] == name and best in e["allocation"]]
        end = start + result.parameters["weeks"] * 7 * DAY
        log.append((end, result.segments[name].allocation.get(best, 0.0)))   # the final state
        colour = cmap(index % 10)
        if log:
            ax.step([(at - start) / DAY / 7 for at, _p in log],
                    [p for _at, p in log], where="post", color=colour,
                    label=f"{name}: P({best})", linewidth=1.2)
        weeks: dict[int, list[bool]] = {}
        for row in result.rows:
            if row["segment"] == name:
                weeks.setdefault(row["week"], []).append(row["tone"] == best)
        if weeks:
            xs = sorted(weeks)
            ax.plot([w - 0.5 for w in xs], [sum(weeks[w]) / len(weeks[w]) for w in xs], "o",
                    color=colour, markersize=5)
    ax.set_xlabel("simulated week")
    ax.set_ylabel("share of the best tone")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, result.parameters["weeks"])
    ax.grid(alpha=0.3)
    ax.set_title("Bandit's allocation to the true best tone (lines) and share of its picks "
                 "per week (dots)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out / "allocation.png"
    fig.savefig(path, dpi=110)
    files["allocation.png"] = path
    plt.close(fig)
    return files


def _start(result: "SimResult") -> float:
    from datetime import datetime

    return datetime.fromisoformat(result.parameters["start"]).timestamp()
