"""What the template sandbox costs (service/template_sandbox.py, the template editor).

1. One message rendered in process (the send path): the renderer's own render, hardened
   sandbox and limits included.
2. The same render in a forked child (run_isolated: fork, pipe, kill), as the editor's preview
   does for a draft, with the gateway's modules loaded so the process is its real size; and a
   child that does nothing, to separate the isolation from the render.
3. The editor's full check of a draft (service/template_preview.check_draft in a child): a key
   template, and the footer partial that nearly every template includes.

Run: .venv/bin/python bench/template_sandbox.py   (writes bench/results/template_sandbox.json)
"""

from __future__ import annotations

import functools
import time

from common import RESULTS, ROOT, machine, percentiles, say, write_json

import service.gateway  # noqa: F401  (the gateway's process size, as in production)
from service import template_sandbox as sandbox
from service.template_preview import check_draft
from service.templates import TemplateRenderer

TEMPLATES = ROOT / "message_templates"


def timed(fn, runs: int) -> dict[str, float]:
    fn()  # warm: templates compiled in this (the parent) process
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def main() -> None:
    renderer = TemplateRenderer(TEMPLATES)
    variables = renderer.catalogue.samples("reminder_first")

    def render():
        return renderer.render("reminder_first", channel="sms", language="en", variables=variables)

    results = {
        "in_process_render": timed(render, 500),
        "isolated_noop": timed(lambda: sandbox.run_isolated(lambda: None), 100),
        "isolated_render": timed(lambda: sandbox.run_isolated(render), 100),
    }
    for name in ("en/reminder_first.soft.j2", "en/_footer.j2"):
        text = (TEMPLATES / name).read_text()
        results[f"check_draft {name}"] = timed(functools.partial(
            sandbox.run_isolated, check_draft, TEMPLATES, renderer.catalogue, {}, name, text,
            timeout=30), 10)
    for name, figures in results.items():
        say(f"{name:40s} p50 {figures['p50']:7.1f} ms  p95 {figures['p95']:7.1f} ms")
    write_json(RESULTS / "template_sandbox.json", {"machine": machine(), "results": results})


if __name__ == "__main__":
    main()
