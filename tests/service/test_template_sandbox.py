"""The hardened template sandbox (service/template_sandbox.py): escapes and bombs are refused
with a clear error, ordinary templates render as before, isolated renders cannot hang us."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path

import jinja2
import pytest
from jinja2.exceptions import SecurityError, TemplateSyntaxError

from service import template_sandbox as sb
from service.template_lint import lint_source
from service.templates import TemplateError, TemplateRenderer, sandbox_environment

ROOT = Path(__file__).resolve().parents[2] / "message_templates"


def render(source: str, **variables) -> str:
    env = sandbox_environment()
    return sb.render_limited(env.from_string(source), variables).text


def refused(source: str, match: str, **variables) -> Exception:
    """The source is refused, at parse time or while rendering, with a message matching."""
    with pytest.raises((SecurityError, TemplateSyntaxError, jinja2.UndefinedError)) as info:
        render(source, **variables)
    assert info.value.message is not None
    assert re.search(match, info.value.message), info.value.message
    return info.value


# --------------------------------------------------------------------------- escapes

@pytest.mark.parametrize(("source", "match"), [
    ("{{ ''.__class__.__mro__ }}", "'__class__': names starting with _ are private"),
    ("{{ x.__class__ }}", "'__class__': names starting with _ are private"),
    ("{{ x['__class__'] }}", "'__class__': names starting with _ are private"),
    ("{{ x._private }}", "'_private': names starting with _ are private"),
    ("{{ cycler.__init__.__globals__ }}", "'cycler' is not available"),
    ("{{ joiner() }}", "'joiner' is not available"),
    ('{{ "{0.__class__}".format(x) }}', "str.format is not available"),
    ('{{ "{0}".format_map(x) }}', "str.format_map is not available"),
    ("{{ self }}", "'self' .* is not available"),
    ("{{ self.body() }}", "'self' .* is not available"),
    ("{{ lipsum(10**6) }}", "'lipsum' is not available"),
    ("{% set ns = namespace(a=1) %}{{ ns.a }}", "'namespace' is not available"),
    ("{% for i in [1] recursive %}{{ loop([i]) }}{% endfor %}", "recursive loops"),
])
def test_escapes_are_refused_when_the_template_is_parsed(source: str, match: str) -> None:
    error = refused(source, match, x="text")
    assert isinstance(error, sb.SandboxSyntaxError) and error.lineno == 1


def test_the_lint_reports_a_static_refusal_with_its_line() -> None:
    issues = lint_source("en/balance.j2", "Hello\n{{ first_name.__class__ }}\n", catalogue=None,
                         root=ROOT)
    assert [(i.code, i.line) for i in issues] == [("syntax", 2)]
    assert "private" in issues[0].message


@pytest.mark.parametrize(("source", "match"), [
    # the same escapes reached dynamically, where no static check can see the name
    ("{% set f = 'format' %}{{ '{0.__class__}'[f](x) }}", "'format' of 'str' object is unsafe"),
    ("{% set f = '__class__' %}{{ x[f] }}", "'__class__' of 'str' object is unsafe"),
    ("{{ x|attr('__class__') }}", "'__class__' of 'str' object is unsafe"),
    # old-style formatting: '%999999999s' would be a memory bomb
    ('{{ "%s" % x }}', "formatting text with % is not available"),
    ('{{ "%999999999s" % (x,) }}', "formatting text with % is not available"),
    # methods outside the short list, even harmless-looking ones
    ("{{ x.ljust(10**9) }}", "'ljust' of 'str' object is unsafe"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "'to_bytes' of 'int' object is unsafe"),
    ("{{ x.encode() }}", "'encode' of 'str' object is unsafe"),
    # the immutable sandbox: variables and literals cannot change
    ("{% set l = [] %}{{ l.append(1) }}{{ l }}", "'append' of 'list' object is unsafe"),
    ("{{ d.update({'a': 2}) }}", "'update' of 'dict' object is unsafe"),
    ("{{ d.pop('a') }}", "'pop' of 'dict' object is unsafe"),
])
def test_escapes_are_refused_when_the_template_runs(source: str, match: str) -> None:
    error = refused(source, match, x="text", d={"a": 1})
    assert isinstance(error, (SecurityError, jinja2.UndefinedError))


def test_removed_filters_are_unknown() -> None:
    for name in ("format", "tojson", "pprint", "urlize", "xmlattr", "random", "safe"):
        with pytest.raises(TemplateSyntaxError, match=f"No filter named '{name}'"):
            render("{{ x|" + name + " }}", x="a")


# --------------------------------------------------------------------------- bombs

@pytest.mark.parametrize(("source", "match"), [
    ("{{ range(10**9)|list }}", "range\\(\\) of 1000000000 numbers; at most 1000"),
    ("{{ range(1001)|list }}", "at most 1000"),
    ("{{ 'x' * 10**9 }}", "'\\*' would make 1000000000 characters"),
    ("{{ 10**9 * 'x' }}", "'\\*' would make 1000000000 characters"),
    ("{{ [1] * 10**6 }}", "'\\*' would make 1000000 items"),
    ("{{ 9**9**9 }}", "'\\*\\*' would make a number over 256 bits"),
    ("{{ 2**300 }}", "'\\*\\*' would make a number over 256 bits"),
    ("{{ (2**200) * (2**200) }}", "over 256 bits"),
    ("{% set s = 'x' * 15000 %}{{ s + s }}", "text of 30000 characters"),
    ("{% set s = 'x' * 15000 %}{{ s ~ s }}", "'~' would make a text of 30000 characters"),
    ("{% set a = 'x' * 1000 %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}"
     "{% set e = d ~ d %}{% set f = e ~ e %}{{ f }}", "'~' would make a text of 32000"),
    ("{% set s = 'x' * 1000 %}{{ ([s] * 1000)|join }}", "join would make a text over 20000"),
    ("{% set s = 'x' * 1000 %}{{ s|replace('x', s) }}", "replace would make a text over 20000"),
    ("{{ 'x'|center(999999999) }}", "center: width at most 200"),
    ("{{ 'x\nx'|indent(999999999) }}", "indent: width at most 40"),
    ("{{ [1, 2]|batch(999999999, 0)|list }}", "batch: at most 1000"),
    ("{{ [1, 2]|slice(999999999)|list }}", "slice: at most 1000"),
    ("{{ 'a b'|wordwrap(1, wrapstring='x' * 1000) }}", "wrapstring at most 10"),
])
def test_size_bombs_are_refused(source: str, match: str) -> None:
    start = time.monotonic()
    refused(source, match)
    assert time.monotonic() - start < 1  # refused before the work, not after


def test_constant_bombs_are_not_computed_at_compile_time() -> None:
    # with Jinja's optimizer these would be folded (computed) while parsing, e.g. by the lint
    env = sandbox_environment()
    start = time.monotonic()
    for source in ("{{ 9**9**9 }}", "{{ 'x' * 999999999 }}", "{{ 'x'|center(999999999) }}",
                   "{{ '%999999999s' % 1 }}"):
        env.from_string(source)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(("source", "match"), [
    ("{% for a in range(9) %}{% for b in range(9) %}{% for c in range(9) %}{% endfor %}"
     "{% endfor %}{% endfor %}", "loops nested more than 2 deep"),
    ("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
     "more than 20000 steps"),
    ("{% for a in range(1000) %}{% for b in range(1000) %}{{ b }}{% endfor %}{% endfor %}",
     "more than 20000 steps|longer than 20000 characters"),
    # no loop at all: a macro calling itself twice, 2**40 calls
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "more than 20000 steps"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "steps|without end"),
    ("{% for c in s %}{% endfor %}", "a loop over 20000 items; at most 1000"),
])
def test_time_bombs_are_refused(source: str, match: str) -> None:
    start = time.monotonic()
    refused(source, match, s="x" * 20000)
    assert time.monotonic() - start < 1.5


def test_a_render_has_a_deadline_and_an_output_limit() -> None:
    env = sandbox_environment()
    slow = env.from_string("{% for a in range(1000) %}{% for b in range(19) %}{{ range(900)|sum }}"
                           "{% endfor %}{% endfor %}")
    with pytest.raises(sb.SandboxLimitError, match="too long"):
        sb.render_limited(slow, {}, seconds=0.01)
    loud = env.from_string("{% for a in range(1000) %}{{ 'x' * 1000 }}{% endfor %}")
    with pytest.raises(sb.SandboxLimitError, match="longer than 20000 characters"):
        sb.render_limited(loud, {})


def test_include_loops_are_refused(tmp_path: Path) -> None:
    env = sandbox_environment(jinja2.DictLoader({"a.j2": "{% include 'a.j2' %}{% include 'a.j2' %}"}))
    with pytest.raises(sb.SandboxLimitError, match="steps|without end"):
        sb.render_limited(env.get_template("a.j2"), {})


# --------------------------------------------------------------------------- still works

def test_ordinary_template_features_still_work() -> None:
    source = """{% from "m.j2" import greet with context %}
{{ greet() }} {{ first_name|upper }} {{ amount * 2 }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }}
{% for row in schedule %}{{ loop.index }}/{{ loop.length }}:{{ row.get('d') }}{{ loop.cycle(',', ';') }}{% endfor %}
{{ products.get('energy', 'x') }} {{ creditor.rstrip('.') }} {{ 10 % 3 }} {{ 2 ** 10 }}
{{ range(3)|join('-') }} {{ 'a-b'|replace('-', '+') }} {{ items|map('upper')|join }}"""
    env = sandbox_environment(jinja2.DictLoader({
        "t.j2": source, "m.j2": "{% macro greet() %}Hi {{ first_name }}{% endmacro %}"}))
    text = sb.render_limited(env.get_template("t.j2"), {
        "first_name": "Anna", "amount": Decimal("1.25"), "creditor": "Energie B.V.",
        "schedule": [{"d": "x"}, {"d": "y"}], "products": {"energy": "energy supply"},
        "items": ["a", "b"]}).text
    assert text.splitlines() == ["Hi Anna ANNA 2.50 ababab [1, 2, 3]",
                                 "1/2:x,2/2:y;energy supply Energie B.V 1 1024", "0-1-2 a+b AB"]


def test_every_real_template_compiles_in_the_hardened_sandbox() -> None:
    env = sandbox_environment(jinja2.FileSystemLoader(str(ROOT)))
    names = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/*.j2"))
    assert len(names) > 200
    for name in names:
        env.get_template(name)


def test_the_renderer_reports_a_limit_as_a_sandbox_refusal(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "k.j2").write_text("{{ 'x' * 10**9 }}\n")
    with pytest.raises(TemplateError, match="refused by the template sandbox: '\\*' would make"):
        TemplateRenderer(tmp_path).render("k", channel="sms", language="en", variables={})


# --------------------------------------------------------------------------- isolation

def test_isolated_render_returns_the_text() -> None:
    assert sb.render_isolated("Hi {{ name }}{% include 'p.j2' %}", {"name": "Anna"},
                              templates={"p.j2": "!"}) == "Hi Anna!"


def test_isolated_render_brings_back_template_errors() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'name' is undefined"):
        sb.render_isolated("Hi {{ name }}", {})
    with pytest.raises(sb.SandboxSyntaxError, match="private") as info:
        sb.render_isolated("\n{{ x.__class__ }}", {"x": 1})
    assert info.value.lineno == 2
    with pytest.raises(sb.SandboxLimitError, match="range"):
        sb.render_isolated("{{ range(10**9)|list }}", {})


def test_an_isolated_run_that_hangs_is_killed() -> None:
    def hang() -> None:
        while True:
            pass

    start = time.monotonic()
    with pytest.raises(sb.IsolationError, match="did not render within 0.3 s"):
        sb.run_isolated(hang, timeout=0.3)
    assert time.monotonic() - start < 2


def test_an_isolated_run_that_eats_memory_is_stopped() -> None:
    def eat() -> int:
        return len(bytearray(2 * 1024 ** 3))

    with pytest.raises(sb.SandboxLimitError, match="memory"):
        sb.run_isolated(eat, timeout=5, memory=64 * 1024 * 1024)


def test_an_isolated_child_that_dies_is_reported() -> None:
    import os

    with pytest.raises(sb.IsolationError, match="died"):
        sb.run_isolated(os._exit, 3, timeout=5)


def test_unpicklable_errors_come_back_as_their_text() -> None:
    class Odd(Exception):
        def __init__(self, a, b):  # pickle cannot rebuild it from args
            super().__init__(f"{a}-{b}")

    def fail() -> None:
        raise Odd(1, 2)

    with pytest.raises(sb.IsolationError, match="Odd: 1-2"):
        sb.run_isolated(fail)


@pytest.mark.asyncio
async def test_waiting_for_an_isolated_run_does_not_block_the_event_loop() -> None:
    import asyncio

    def hang() -> None:
        while True:
            pass

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    with pytest.raises(sb.IsolationError, match="within 0.3 s"):
        await sb.run_isolated_async(hang, timeout=0.3)
    env = sandbox_environment()
    assert await sb.run_isolated_async(lambda: sb.render_limited(env.from_string("{{ 1 + 1 }}"),
                                                                 {}).text) == "2"
    ticker.cancel()
    assert ticks >= 15  # the loop kept running while the child spun
