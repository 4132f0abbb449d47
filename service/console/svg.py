"""Drawing SVG by hand for the console's charts (service/console/charts.py): an element
builder that escapes every attribute and every text, and the pieces every chart uses (a
legend, wrapped notes, ticks for shares, counts and time, the "nothing to show" panel).

Presentation attributes only, never ``style`` (the console's CSP is ``style-src 'self'``);
text and axes in ``currentColor``, so they follow the page's colours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

WIDTH = 760
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def num(value: float) -> str:
    """A coordinate: one decimal at most, none when it is whole."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


class Svg:
    """Elements appended as text; every attribute and text escaped. `_` in an attribute name
    becomes `-` (font_size -> font-size); `class_` -> class."""

    def __init__(self, name: str, title: str, desc: str, width: int = WIDTH):
        self.name, self.title, self.desc, self.width = name, title, desc, width
        self.parts: list[str] = []

    @staticmethod
    def _attrs(attrs: Mapping[str, Any]) -> str:
        out = []
        for key, value in attrs.items():
            if value is None:
                continue
            key = key.rstrip("_").replace("_", "-")
            out.append(f' {key}="{num(value) if isinstance(value, float) else escape(str(value))}"')
        return "".join(out)

    def add(self, tag: str, tip: str | None = None, **attrs: Any) -> None:
        """An element; `tip`: its tooltip (a <title> child, read out by screen readers)."""
        if tip is None:
            self.parts.append(f"<{tag}{self._attrs(attrs)}/>")
        else:
            self.parts.append(f"<{tag}{self._attrs(attrs)}><title>{escape(tip)}</title></{tag}>")

    def text(self, x: float, y: float, content: str, *, size: float = 12, anchor: str = "start",
             weight: str | None = None, muted: bool = False, **attrs: Any) -> None:
        attributes = self._attrs({"x": float(x), "y": float(y), "font_size": size,
                                  "text_anchor": anchor, "font_weight": weight,
                                  "fill_opacity": 0.7 if muted else None, **attrs})
        self.parts.append(f"<text{attributes}>{escape(content)}</text>")

    def open(self, tag: str, **attrs: Any) -> None:
        self.parts.append(f"<{tag}{self._attrs(attrs)}>")

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    def render(self, height: float) -> str:
        ident = f"chart-{self.name}"
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {num(height)}" '
                f'width="{self.width}" height="{num(height)}" role="img" class="chart-svg" '
                f'aria-labelledby="{ident}-title {ident}-desc" font-family="{escape(FONT)}" '
                f'font-size="12" fill="currentColor">'
                f'<title id="{ident}-title">{escape(self.title)}</title>'
                f'<desc id="{ident}-desc">{escape(self.desc)}</desc>')
        return head + "".join(self.parts) + "</svg>\n"


def empty(name: str, title: str, message: str, height: int = 120) -> str:
    svg = Svg(name, title, f"{title}: {message}")
    svg.text(16, 24, title, size=14, weight="600")
    svg.add("rect", x=16.0, y=38.0, width=float(WIDTH - 32), height=float(height - 54), rx=6,
            fill="none", stroke="currentColor", stroke_opacity=0.3, stroke_dasharray="4 4")
    svg.text(WIDTH / 2, 38 + (height - 54) / 2, message, size=13, anchor="middle", dy="0.35em",
             muted=True)
    return svg.render(height)


def legend(svg: Svg, x: float, y: float, items: Sequence[tuple[str, str]], *,
           hollow: Iterable[str] = ()) -> float:
    """Swatches and labels in a row (wrapping); returns the y below them."""
    hollow = set(hollow)
    start = x
    for label, colour in items:
        width = 22 + 7 * len(label)
        if x + width > WIDTH - 16 and x > start:
            x, y = start, y + 18
        if label in hollow:
            svg.add("rect", x=x + 0.5, y=y - 9.5, width=11.0, height=11.0, fill="none",
                    stroke=colour, stroke_width=1.5, stroke_dasharray="3 2")
        else:
            svg.add("rect", x=float(x), y=y - 10.0, width=12.0, height=12.0, rx=2, fill=colour)
        svg.text(x + 17, y, label, size=12)
        x += width + 12
    return y + 16


def pct(value: float | None, digits: int = 1) -> str:
    """0.25 -> "25.0%"; None -> a dash."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def nice_top(value: float) -> tuple[float, float]:
    """An upper bound for a 0..1 axis above `value` (at least 10 %), and its tick step."""
    for top, step in ((0.1, 0.02), (0.2, 0.05), (0.3, 0.05), (0.4, 0.1), (0.5, 0.1), (0.6, 0.1),
                      (0.8, 0.2), (1.0, 0.2)):
        if value <= top + 1e-9:
            return top, step
    return 1.0, 0.2


def wrapped(svg: Svg, x: float, y: float, text: str, *, size: float = 11,
            width: float = WIDTH - 32, muted: bool = True) -> float:
    """`text` in lines that fit `width` (estimated from the font size); the y after them."""
    most = max(int(width / (size * 0.56)), 20)
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > most:
            svg.text(x, y, line, size=size, muted=muted)
            y, line = y + size * 1.35, word
        else:
            line = f"{line} {word}" if line else word
    if line:
        svg.text(x, y, line, size=size, muted=muted)
    return y + size * 1.35


def count_ticks(top: int) -> list[int]:
    """Whole-number ticks from 0 to at least `top`, at most ~6 of them."""
    top = max(top, 1)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000,
                            math.inf) if top / s <= 5)
    if step == math.inf:
        step = 10 ** math.ceil(math.log10(top / 5))
    last = int(math.ceil(top / step) * step)
    return list(range(0, last + 1, int(step)))


def desc_join(parts: list[str], limit: int = 40) -> str:
    if len(parts) > limit:
        parts = [*parts[:limit], f"and {len(parts) - limit} more (the tables below give all)"]
    return "; ".join(parts)


TIME_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400,
              7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 364 * 86400)


def time_ticks(start: float, end: float, most: int = 7) -> list[tuple[float, str]]:
    """(epoch seconds, label) at a round UTC step, at most `most` of them; a day's first tick
    (and the first overall) names the date when the step is under a day."""
    span = max(end - start, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= most), TIME_STEPS[-1])
    first = math.ceil(start / step) * step
    ticks = []
    at = float(first)
    while at <= end + 1e-6:
        when = datetime.fromtimestamp(at, UTC)
        if step >= 86400:
            label = when.strftime("%d %b %Y" if step >= 91 * 86400 else "%d %b")
        elif not ticks or when.hour == 0 and when.minute == 0:
            label = when.strftime("%d %b %H:%M")
        else:
            label = when.strftime("%H:%M")
        ticks.append((at, label))
        at += step
    return ticks


def iso_minute(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def compact(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A polygon's vertices without repeats and without the middle of straight runs."""
    out: list[tuple[float, float]] = []
    for x, y in points:
        point = (round(x, 1), round(y, 1))
        if out and point == out[-1]:
            continue
        if len(out) >= 2 and (out[-2][1] == out[-1][1] == point[1] or out[-2][0] == out[-1][0] == point[0]):
            out[-1] = point
            continue
        out.append(point)
    return out
