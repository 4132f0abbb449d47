"""The results dashboard in a browser, with results in Redis (seeded through the real code):
every chart draws, with bars, and the page breaks no content-security rule.
Screenshot: test-artifacts/console/dashboard-with-results.png."""

from __future__ import annotations

import pytest

from service import appkeys as K
from service.console.dashboard import DASHBOARD
from service.gateway import create_app
from tests.browser.test_console_agent_browser import log_in
from tests.service.console_support import PASSWORD, add_people, console_settings
from tests.service.results_data import REPORT_AT, seed_results

pytestmark = pytest.mark.browser


def test_the_dashboard_draws_every_chart(servers, chromium, artifacts, redis_url):
    app = create_app(console_settings(redis_url))
    base = servers.serve(app)
    servers.run(add_people(app, {"maria": "manager"}))
    servers.run(seed_results(app[K.REDIS], app[K.KEYS]))
    app[DASHBOARD].clock = lambda: REPORT_AT

    context = chromium.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    log_in(page, base, "maria", PASSWORD)
    page.goto(f"{base}/console/dashboard")
    page.wait_for_selector("svg[role=img]")
    charts = page.locator("svg[role=img]")
    assert charts.count() >= 5
    for index in range(charts.count()):
        chart = charts.nth(index)
        assert chart.locator("title").count() >= 1
        assert chart.locator("rect, circle, path, line").count() > 3, chart.get_attribute("aria-label")
    page.screenshot(path=str(artifacts / "console" / "dashboard-with-results.png"), full_page=True)
    assert problems == []
    context.close()
