"""The sandbox every message template is rendered in, and the limits it runs under.

Managers edit templates in the console (service/template_versions.py), so a template is
untrusted code. Jinja2's :class:`ImmutableSandboxedEnvironment` already refuses attributes
starting with ``_``, Python internals and changes to lists and dicts. :class:`HardenedSandbox`
adds what it leaves open:

* **No way out**: ``self``, ``lipsum``, ``namespace``, ``cycler`` and ``joiner`` are gone;
  ``str.format``/``format_map`` and ``"..." % x`` are refused (``~`` joins text); a method may
  be called only if it is on a short list of harmless ones (``rstrip``, ``get``, ``items``...),
  so ``(1).to_bytes(10**9)`` or ``"x".ljust(10**9)`` cannot run; filters that only make sense
  in HTML or take a size (``format``, ``tojson``, ``pprint``, ``urlize``...) are not there,
  ``center``/``indent``/``batch``/``slice``/``join``/``replace``/``wordwrap`` check theirs.
* **Nothing huge**: ``*``, ``**``, ``+`` and ``~`` refuse results longer than
  :data:`MAX_STRING` characters or :data:`MAX_ITEMS` items, and integers over
  :data:`MAX_INT_BITS` bits; ``range`` gives at most :data:`MAX_RANGE` numbers.
* **Nothing long**: loops nest at most :data:`MAX_LOOP_DEPTH` deep (a static check, so the
  template lint reports it with the line), ``recursive`` loops are refused, one loop runs at
  most :data:`MAX_LOOP_ITEMS` times, and one render takes at most :data:`MAX_STEPS` steps (loop
  iterations, macro calls, includes) and :data:`RENDER_SECONDS` — checked at every step and
  every chunk of output, so even a loop that prints nothing is stopped.
* **Nothing evaluated at compile time**: the optimizer (constant folding) is off, so parsing a
  template (the lint does it) never computes ``9**9**9``.

:func:`render_limited` renders a compiled template within those limits (output at most
:data:`MAX_OUTPUT` characters). :func:`run_isolated` runs a function in a forked child process
(result through a pipe, the child killed at the timeout, its memory capped): a draft from the
editor is previewed and checked there, so not even a bug in these limits can hang or bloat the
gateway. :func:`render_isolated` is the one-template form.

Errors: a template that breaks a limit raises :class:`SandboxLimitError` (a Jinja2
``SecurityError``, so the renderer reports it as "refused by the template sandbox"); a static
refusal is a ``TemplateSyntaxError`` naming the line.
"""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import os
import pickle
import resource
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

__all__ = [
    "HardenedSandbox",
    "IsolationError",
    "LimitedRender",
    "SandboxLimitError",
    "SandboxSyntaxError",
    "hardened_environment",
    "render_isolated",
    "render_limited",
    "run_isolated",
    "run_isolated_async",
]

MAX_SOURCE = 20_000          # characters of one template file (the largest today: ~2,600)
MAX_OUTPUT = 20_000          # characters one render may produce (an email body is ~2,000)
MAX_STRING = 20_000          # characters of any text built inside a template
MAX_ITEMS = 1_000            # items of any list built inside a template
MAX_INT_BITS = 256           # an integer larger than 2**256 is not a message's business
MAX_RANGE = 1_000            # range(n): Jinja's own cap is 100,000
MAX_LOOP_ITEMS = 1_000       # iterations of one loop
MAX_LOOP_DEPTH = 2           # {% for %} inside {% for %}, no deeper
MAX_STEPS = 20_000           # loop iterations + macro calls + includes in one render
RENDER_SECONDS = 1.0         # one render, in process
ISOLATED_SECONDS = 1.0       # one isolated run (a child process), start to result
ISOLATED_MEMORY = 256 * 1024 * 1024  # what an isolated child may allocate beyond its parent

#: Names a template cannot use: ways to reach template internals or to make unbounded work.
FORBIDDEN_NAMES = {
    "self": "'self' (the template's blocks) is not available in message templates",
    "lipsum": "'lipsum' is not available in message templates",
    "namespace": "'namespace' is not available in message templates: variables cannot be changed",
    "cycler": "'cycler' is not available in message templates (use loop.cycle)",
    "joiner": "'joiner' is not available in message templates",
}
#: Methods a template may call, on any object (the variables are plain data: text, numbers,
#: dates, lists and dicts). Everything else, str.format and friends included, is refused.
SAFE_METHODS = frozenset({
    # text
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
    "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower",
    "lstrip", "partition", "removeprefix", "removesuffix", "rfind", "rindex", "rpartition",
    "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
    # dicts (reading)
    "get", "items", "keys", "values",
    # dates
    "isoformat", "isoweekday", "weekday",
    # a loop's helpers
    "cycle", "changed",
})
#: Jinja2's filters a message template may use, as they are; the checked ones are added below.
PLAIN_FILTERS = ("abs", "attr", "capitalize", "count", "d", "default", "dictsort", "first",
                 "float", "groupby", "int", "items", "last", "length", "list", "lower", "map",
                 "max", "min", "reject", "rejectattr", "reverse", "round", "select", "selectattr",
                 "sort", "string", "sum", "title", "trim", "truncate", "unique", "upper",
                 "urlencode", "wordcount")


class SandboxLimitError(SecurityError):
    """A template broke one of the sandbox's limits (size, time, steps, a refused operation)."""


class SandboxSyntaxError(TemplateSyntaxError, SecurityError):
    """Refused when the template is parsed (a forbidden name, attribute or construct): a syntax
    error for the lint and the renderer, with its line, and a sandbox refusal."""


class IsolationError(SandboxLimitError):
    """An isolated run did not finish: it timed out, ran out of memory or died."""


# --------------------------------------------------------------------------- render budget


@dataclass
class _Budget:
    """One render's allowance: steps and a deadline (see :func:`render_limited`)."""

    deadline: float
    max_steps: int = MAX_STEPS
    steps: int = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise SandboxLimitError(f"the template takes more than {self.max_steps} steps "
                                    "(loop iterations, macro calls, includes)")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SandboxLimitError("the template took too long to render")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget",
                                                                        default=None)


def _step() -> str:
    budget = _BUDGET.get()
    if budget is not None:
        budget.step()
    return ""


class _CountedLoop:
    """What a ``{% for %}`` iterates: the original, at most MAX_LOOP_ITEMS times, each
    iteration a step of the render's budget. Keeps ``len`` so ``loop.length`` stays cheap."""

    def __init__(self, iterable: Any) -> None:
        self._iterable = iterable
        try:
            size = len(iterable)
        except TypeError:
            size = None
        if size is not None and size > MAX_LOOP_ITEMS:
            raise SandboxLimitError(f"a loop over {size} items; at most {MAX_LOOP_ITEMS}")
        self._size = size

    def __len__(self) -> int:
        if self._size is None:
            raise TypeError("length unknown")
        return self._size

    def __iter__(self) -> Iterator[Any]:
        budget = _BUDGET.get()
        for count, item in enumerate(self._iterable, 1):
            if count > MAX_LOOP_ITEMS:
                raise SandboxLimitError(f"a loop over more than {MAX_LOOP_ITEMS} items")
            if budget is not None:
                budget.step()
            yield item


# --------------------------------------------------------------------------- size checks


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise SandboxLimitError(f"{what} would make a text of {len(value)} characters; "
                                f"at most {MAX_STRING}")
    if isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
        raise SandboxLimitError(f"{what} would make a list of {len(value)} items; at most {MAX_ITEMS}")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SandboxLimitError(f"{what} would make a number over {MAX_INT_BITS} bits")
    return value


def _predicted_length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _check_repeat(seq: Any, times: Any) -> None:
    """``seq * times`` before it is computed."""
    size = _predicted_length(seq)
    if size is None or not isinstance(times, int):
        return
    limit = MAX_STRING if isinstance(seq, str) else MAX_ITEMS
    if size * max(times, 0) > limit:
        kind = "characters" if isinstance(seq, str) else "items"
        raise SandboxLimitError(f"'*' would make {size * times} {kind}; at most {limit}")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if base.bit_length() * exponent > MAX_INT_BITS:
            raise SandboxLimitError(f"'**' would make a number over {MAX_INT_BITS} bits")


def capped_range(*args: int) -> range:
    """``range`` with at most :data:`MAX_RANGE` numbers."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SandboxLimitError(f"range() of {len(numbers)} numbers; at most {MAX_RANGE}")
    return numbers


def _concat(*parts: Any) -> str:
    """The ``~`` operator, refusing texts over MAX_STRING before joining them."""
    texts = [str(part) for part in parts]
    total = sum(map(len, texts))
    if total > MAX_STRING:
        raise SandboxLimitError(f"'~' would make a text of {total} characters; at most {MAX_STRING}")
    return "".join(texts)


# --------------------------------------------------------------------------- filters

def _limited_items(items: Iterable[Any], separator: str) -> Iterator[str]:
    total = 0
    for item in items:
        text = str(item)
        total += len(text) + len(separator)
        if total > MAX_STRING:
            raise SandboxLimitError(f"join would make a text over {MAX_STRING} characters")
        yield text


def _checked_filters() -> dict[str, Callable[..., Any]]:
    plain = {name: FILTERS[name] for name in PLAIN_FILTERS}

    def center(value: Any, width: int = 80) -> str:
        if not isinstance(width, int) or width > 200:
            raise SandboxLimitError("center: width at most 200")
        return FILTERS["center"](value, width)

    def indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        if (len(width) if isinstance(width, str) else width) > 40:
            raise SandboxLimitError("indent: width at most 40")
        return FILTERS["indent"](value, width, first, blank)

    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        if not isinstance(linecount, int) or linecount > MAX_ITEMS:
            raise SandboxLimitError(f"batch: at most {MAX_ITEMS} per batch")
        return FILTERS["batch"](value, linecount, fill_with)

    def slice_(value: Any, slices: int, fill_with: Any = None) -> Any:
        if not isinstance(slices, int) or slices > MAX_ITEMS:
            raise SandboxLimitError(f"slice: at most {MAX_ITEMS} slices")
        return FILTERS["slice"](value, slices, fill_with)

    @jinja2.pass_environment
    def join(environment: jinja2.Environment, value: Iterable[Any], d: str = "",
             attribute: str | int | None = None) -> str:
        if attribute is not None:
            value = map(make_attrgetter(environment, attribute), value)
        return str(d).join(_limited_items(value, str(d)))

    def replace(value: Any, old: str, new: str, count: int | None = None) -> str:
        text, old, new = str(value), str(old), str(new)
        found = len(text) + 1 if old == "" else text.count(old)
        if count is not None and count >= 0:
            found = min(found, count)
        if len(text) + found * (len(new) - len(old)) > MAX_STRING:
            raise SandboxLimitError(f"replace would make a text over {MAX_STRING} characters")
        return text.replace(old, new, -1 if count is None else count)

    @jinja2.pass_environment
    def wordwrap(environment: jinja2.Environment, s: str, width: int = 79,
                 break_long_words: bool = True, wrapstring: str | None = None,
                 break_on_hyphens: bool = True) -> str:
        if wrapstring is not None and len(str(wrapstring)) > 10:
            raise SandboxLimitError("wordwrap: wrapstring at most 10 characters")
        return FILTERS["wordwrap"](environment, s, width, break_long_words, wrapstring,
                                   break_on_hyphens)

    checked = {"center": center, "indent": indent, "batch": batch, "slice": slice_,
               "join": join, "replace": replace, "wordwrap": wordwrap}
    return {**plain, **checked}


# --------------------------------------------------------------------------- static checks


def _call(name: str, *args: nodes.Expr, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), list(args), [], None, None,
                      lineno=lineno)


class _Guard(NodeTransformer):
    """Refuses what a message template may not do (as syntax errors, with the line) and
    routes loops, ``~``, macro calls and includes through the render budget."""

    def __init__(self, name: str | None, filename: str | None) -> None:
        self.name = name
        self.filename = filename
        self.depth = 0

    def fail(self, message: str, lineno: int) -> SandboxSyntaxError:
        return SandboxSyntaxError(message, lineno, self.name, self.filename)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise self.fail("recursive loops are not available in message templates", node.lineno)
        self.depth += 1
        if self.depth > MAX_LOOP_DEPTH:
            raise self.fail(f"loops nested more than {MAX_LOOP_DEPTH} deep are not allowed "
                            "in message templates", node.lineno)
        try:
            self.generic_visit(node)
        finally:
            self.depth -= 1
        node.iter = _call("nudge_loop", node.iter, lineno=node.lineno)
        return node

    def visit_Name(self, node: nodes.Name) -> nodes.Node:
        if node.ctx == "load" and node.name in FORBIDDEN_NAMES:
            raise self.fail(FORBIDDEN_NAMES[node.name], node.lineno)
        return node

    # the object first, then its attribute: the first refusal in reading order is named
    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Node:
        self.generic_visit(node)
        self._check_attribute(node.attr, node.lineno)
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            self._check_attribute(node.arg.value, node.lineno)
        return node

    def _check_attribute(self, attr: str, lineno: int) -> None:
        if attr.startswith("_"):
            raise self.fail(f"{attr!r}: names starting with _ are private", lineno)
        if attr in ("format", "format_map"):
            raise self.fail(f"str.{attr} is not available in message templates: join text with ~",
                            lineno)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call("nudge_concat", *node.nodes, lineno=node.lineno)

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node:
        self.generic_visit(node)
        node.body.insert(0, nodes.Output([_call("nudge_step", lineno=node.lineno)], lineno=node.lineno))
        return node

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.Node:
        self.generic_visit(node)
        node.body.insert(0, nodes.Output([_call("nudge_step", lineno=node.lineno)], lineno=node.lineno))
        return node

    def visit_Include(self, node: nodes.Include) -> list[nodes.Node]:
        self.generic_visit(node)
        return [nodes.Output([_call("nudge_step", lineno=node.lineno)], lineno=node.lineno), node]


# --------------------------------------------------------------------------- environment


class HardenedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the limits of this module (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    # helpers the guarded code calls (nodes.EnvironmentAttribute)
    nudge_loop = staticmethod(_CountedLoop)
    nudge_concat = staticmethod(_concat)
    nudge_step = staticmethod(_step)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["optimized"] = False  # no constant folding: nothing is computed at compile time
        super().__init__(*args, **kwargs)
        for name in FORBIDDEN_NAMES:
            self.globals.pop(name, None)
        self.globals["range"] = capped_range
        self.filters = _checked_filters()

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        if len(source) > MAX_SOURCE:
            raise SandboxSyntaxError(f"the template has {len(source)} characters; at most "
                                     f"{MAX_SOURCE}", 1, name, filename)
        tree = super()._parse(source, name, filename)
        _Guard(name, filename).visit(tree)
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_") or not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(value, (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)):
            return attr in SAFE_METHODS
        return True

    def wrap_str_format(self, value: Any) -> None:
        # str.format / format_map are refused outright (not in SAFE_METHODS), rather than run
        # through Jinja's SandboxedFormatter: a field like {0:>999999999} is a memory bomb.
        return None

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SandboxLimitError("formatting text with % is not available in message "
                                    "templates: join text with ~")
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            if isinstance(left, int) and isinstance(right, int) \
                    and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SandboxLimitError(f"'*' would make a number over {MAX_INT_BITS} bits")
        elif operator == "**":
            _check_power(left, right)
        return _check_size(self.binop_table[operator](left, right), f"{operator!r}")


def hardened_environment(loader: jinja2.BaseLoader | None = None) -> HardenedSandbox:
    """The message templates' environment: hardened sandbox, strict about undefined variables,
    plain text (no autoescape), and the whitespace rules the templates are written for."""
    return HardenedSandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        # an included partial ends with its newline, so "{% include %}" behaves as a line
        keep_trailing_newline=True,
    )


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class LimitedRender:
    text: str
    exported: dict[str, Any]  # top-level {% set %} names (an email's subject)


def render_limited(template: jinja2.Template, variables: Mapping[str, Any], *,
                   max_output: int = MAX_OUTPUT, seconds: float = RENDER_SECONDS,
                   max_steps: int = MAX_STEPS) -> LimitedRender:
    """Render like ``template.make_module(variables)`` (text and exported names), consuming the
    output chunk by chunk: refused past ``max_output`` characters, ``seconds`` or ``max_steps``."""
    budget = _Budget(time.monotonic() + seconds, max_steps)
    token = _BUDGET.set(budget)
    try:
        context = template.new_context(dict(variables))
        parts: list[str] = []
        size = 0
        for chunk in template.root_render_func(context):
            size += len(chunk)
            if size > max_output:
                raise SandboxLimitError(f"the message is longer than {max_output} characters")
            budget.check_time()
            parts.append(chunk)
        return LimitedRender("".join(parts), context.get_exported())
    except RecursionError as error:
        raise SandboxLimitError("templates include or call each other without end") from error
    except MemoryError as error:
        raise SandboxLimitError("the template needs too much memory") from error
    finally:
        _BUDGET.reset(token)


T = TypeVar("T")


def _memory_cap(extra: int) -> None:
    """Cap this (child) process's address space at what it has now plus ``extra`` bytes."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + extra
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):  # no /proc, or a hard limit already lower: keep that one
        pass


def _child(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...], memory: int) -> None:
    _memory_cap(memory)
    try:
        outcome: tuple[str, Any] = ("ok", fn(*args))
    except MemoryError:
        outcome = ("error", SandboxLimitError("the template needs too much memory"))
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        outcome = ("error", error)
    try:
        payload = pickle.dumps(outcome)
        pickle.loads(payload)  # an exception that cannot be rebuilt goes back as its text
    except Exception:  # noqa: BLE001
        name, value = outcome
        payload = pickle.dumps(("error", IsolationError(f"{type(value).__name__}: {value}"))
                               if name == "error" else ("error", IsolationError("unpicklable result")))
    conn.send_bytes(payload)
    conn.close()


def _start(fn: Callable[..., Any], args: tuple[Any, ...], memory: int) -> tuple[Any, Any]:
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, fn, args, memory), daemon=True)
    process.start()
    sender.close()
    return process, receiver


def _result(receiver: Any) -> Any:
    try:
        status, value = pickle.loads(receiver.recv_bytes())
    except EOFError:
        raise IsolationError("the render process died (out of memory?)") from None
    if status == "error":
        raise value
    return value


def _stop(process: Any, receiver: Any) -> None:
    # the child has nothing left to do once it answered (or is too late): no need to wait
    if process.is_alive():
        process.kill()
    process.join()
    process.close()
    receiver.close()


def run_isolated(fn: Callable[..., T], *args: Any, timeout: float = ISOLATED_SECONDS,
                 memory: int = ISOLATED_MEMORY) -> T:
    """``fn(*args)`` in a forked child process: its result, or the exception it raised.

    The child shares nothing back but the pickled result; it is killed after ``timeout``
    seconds (:class:`IsolationError`) and may allocate ``memory`` bytes beyond what the parent
    had. ``fn`` and ``args`` are not pickled (fork copies them), so closures are fine. Costs
    10-15 ms beyond ``fn`` itself (fork, pipe, kill; measured with the gateway's modules loaded)."""
    process, receiver = _start(fn, args, memory)
    try:
        if not receiver.poll(timeout):
            raise IsolationError(f"the template did not render within {timeout:g} s")
        return _result(receiver)
    finally:
        _stop(process, receiver)


async def run_isolated_async(fn: Callable[..., T], *args: Any, timeout: float = ISOLATED_SECONDS,
                             memory: int = ISOLATED_MEMORY) -> T:
    """:func:`run_isolated` for the event loop: the child is forked from the loop's thread and
    its answer awaited without blocking the loop."""
    loop = asyncio.get_running_loop()
    process, receiver = _start(fn, args, memory)
    ready = loop.create_future()
    try:
        loop.add_reader(receiver.fileno(), lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            raise IsolationError(f"the template did not render within {timeout:g} s") from None
        finally:
            loop.remove_reader(receiver.fileno())
        return _result(receiver)
    finally:
        _stop(process, receiver)


def render_isolated(source: str, variables: Mapping[str, Any], *, name: str = "draft.j2",
                    templates: Mapping[str, str] | None = None,
                    loader: jinja2.BaseLoader | None = None,
                    filters: Mapping[str, Callable[..., Any]] | None = None,
                    timeout: float = ISOLATED_SECONDS, max_output: int = MAX_OUTPUT) -> str:
    """Render an untrusted template source in a child process (:func:`run_isolated`) within
    the sandbox's limits. ``templates`` (name -> source) and then ``loader`` provide what it
    includes, imports or extends; ``filters`` are added to the environment."""

    def render() -> str:
        mapping = {**(templates or {}), name: source}
        dict_loader = jinja2.DictLoader(mapping)
        env = hardened_environment(jinja2.ChoiceLoader([dict_loader, loader]) if loader
                                   else dict_loader)
        env.filters.update(filters or {})
        return render_limited(env.get_template(name), variables, max_output=max_output).text

    return run_isolated(render, timeout=timeout)
