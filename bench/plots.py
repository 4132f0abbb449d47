"""The figures of docs/performance.md, drawn from the JSON the load and soak benchmarks write.

    .venv/bin/python bench/plots.py

Reads bench/results/load-1engine.json, load-scale-out.json and soak.json (whichever exist) and
writes SVGs to docs/perf/. Colours: the Okabe-Ito palette, as in the console's charts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, say  # noqa: E402

OUT = ROOT / "docs" / "perf"
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
plt.rcParams.update({"svg.hashsalt": "nudge", "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False})


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _save(figure, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(OUT / name, format="svg", metadata={"Date": None})
    plt.close(figure)
    say(f"wrote {(OUT / name).relative_to(ROOT)}")


def latency_vs_rate(runs: dict[str, dict]) -> None:
    figure, axis = plt.subplots(figsize=(9.5, 4.2))
    colour = iter(COLOURS)
    for label, data in runs.items():
        rows = data.get("e2e", {}).get("rates", {})
        if rows:
            rates = [int(r) for r in rows]
            c = next(colour)
            axis.plot(rates, [rows[r]["reply_ms"]["p50"] for r in rows], "o-", color=c,
                      label=f"Nudge, {label}: p50")
            axis.plot(rates, [rows[r]["reply_ms"]["p99"] for r in rows], "o--", color=c,
                      label=f"Nudge, {label}: p99")
            raw = [rows[r].get("raw_engine", {}).get("latency_ms", {}) for r in rows]
            if all(raw):
                c = next(colour)
                axis.plot(rates, [x["p50"] for x in raw], "s-", color=c, label=f"raw engine, {label}: p50")
                axis.plot(rates, [x["p99"] for x in raw], "s--", color=c, label=f"raw engine, {label}: p99")
        builtin = data.get("builtin", {}).get("rates", {})
        if builtin:
            c = next(colour)
            rates = [int(r) for r in builtin]
            axis.plot(rates, [builtin[r]["webhook_answer_ms"]["p50"] for r in builtin], "^-", color=c,
                      label="Rasa's Twilio channel: webhook answer p50")
            axis.plot(rates, [builtin[r]["webhook_answer_ms"]["p99"] for r in builtin], "^--", color=c,
                      label="Rasa's Twilio channel: webhook answer p99")
    axis.axhline(15_000, color="#999999", linewidth=0.8)
    axis.text(axis.get_xlim()[0], 16_500, "Twilio's webhook timeout, 15 s", color="#666666", fontsize=8)
    axis.set_yscale("log")
    axis.set_xlabel("debtor messages per second")
    axis.set_ylabel("ms (log scale)")
    axis.set_title("Reply latency: signed webhook in → provider API call out")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(figure, "latency-vs-rate.svg")


def acks(data: dict) -> None:
    rows = {r: v for r, v in data.get("ack", {}).get("rates", {}).items() if isinstance(v, dict)}
    if not rows:
        return
    figure, axis = plt.subplots(figsize=(5, 3))
    rates = [int(r) for r in rows]
    for key, style, c in (("p50", "o-", COLOURS[0]), ("p99", "o--", COLOURS[1]), ("max", "o:", COLOURS[3])):
        axis.plot(rates, [rows[r]["latency_ms"][key] for r in rows], style, color=c, label=key)
    axis.set_xlabel("webhooks per second")
    axis.set_ylabel("ms")
    axis.set_title("Webhook acknowledgement (gateway)")
    axis.legend(fontsize=8)
    _save(figure, "webhook-ack.svg")


def soak(data: dict) -> None:
    samples = data["samples"]
    minutes = [s["minute"] for s in samples]
    figure, (engine_axis, memory_axis, latency_axis) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    names = sorted({n for s in samples for n in s["rss_mib"]})
    for index, name in enumerate(names):
        axis = engine_axis if name.startswith("engine") else memory_axis
        axis.plot(minutes, [s["rss_mib"].get(name) for s in samples], "-", color=COLOURS[index % 8], label=name)
    memory_axis.plot(minutes, [s["redis_used_memory_mib"] for s in samples], ":", color="#000000",
                     label="Redis used_memory")
    engine_axis.set_ylabel("MiB")
    engine_axis.set_title(f"Soak: {data['minutes']} min at {data['rate']:g} messages/s — resident memory")
    engine_axis.legend(fontsize=7)
    memory_axis.set_ylabel("MiB")
    memory_axis.legend(fontsize=7, ncol=2)
    latency_axis.plot(minutes, [s["reply_ms"].get("p50") for s in samples], "o-", color=COLOURS[0], label="p50")
    latency_axis.plot(minutes, [s["reply_ms"].get("p99") for s in samples], "o--", color=COLOURS[1], label="p99")
    latency_axis.set_ylabel("reply latency, ms")
    latency_axis.set_xlabel("minute")
    latency_axis.legend(fontsize=7)
    _save(figure, "soak.svg")


def main() -> None:
    runs = {label: data for label, data in (("1 of each", _load("load-1engine.json")),
                                            ("2 of each", _load("load-scale-out.json"))) if data}
    if runs:
        latency_vs_rate(runs)
        acks(next(iter(runs.values())))
    data = _load("soak.json")
    if data:
        soak(data)


if __name__ == "__main__":
    main()
