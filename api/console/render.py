"""What the console draws from data: a sidecar with the value at a JSON pointer marked, a diff of
two versions, and the per-day chart as inline SVG (no JavaScript, no images to fetch)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

#: the chart's size in CSS pixels
CHART_WIDTH, CHART_HEIGHT = 600, 140


def pointer_parts(pointer: str | None) -> list[str] | None:
    """RFC 6901 pointer -> its reference tokens (None: not a pointer)."""
    if pointer is None:
        return None
    text = pointer.removeprefix("#")
    if text == "":
        return []
    if not text.startswith("/"):
        return None
    return [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/")]


def marked_json(text: str | None, pointers: Sequence[str | None]) -> Markup:
    """The sidecar pretty-printed, each value a pointer names wrapped in <mark>; text that does
    not parse is shown as it is (its problem is then the parse error)."""
    if text is None:
        return Markup("")
    try:
        value = json.loads(text)
    except ValueError:
        return Markup(escape(text))
    wanted = {tuple(p) for p in map(pointer_parts, pointers) if p is not None}
    out: list[str] = []
    _emit(value, (), 0, wanted, out)
    return Markup("".join(out))


def _emit(value: Any, path: tuple[str, ...], depth: int, wanted: set, out: list[str]) -> None:
    mark = path in wanted
    if mark:
        out.append('<mark id="pointer-' + str(escape("/".join(path))) + '">')
    pad = "  " * (depth + 1)
    if isinstance(value, dict) and value:
        out.append("{\n")
        for i, (key, item) in enumerate(value.items()):
            out.append(pad + str(escape(json.dumps(key))) + ": ")
            _emit(item, (*path, str(key)), depth + 1, wanted, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append("  " * depth + "}")
    elif isinstance(value, list) and value:
        out.append("[\n")
        for i, item in enumerate(value):
            out.append(pad)
            _emit(item, (*path, str(i)), depth + 1, wanted, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append("  " * depth + "]")
    else:
        out.append(str(escape(json.dumps(value))))
    if mark:
        out.append("</mark>")


def diff_lines(old: Any, new: Any) -> list[tuple[str, str]]:
    """A unified diff of two JSON documents, as (kind, line): kind is add, del, hunk or same."""
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    rows = []
    for line in difflib.unified_diff(a, b, "older", "newer", n=3, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        rows.append((kind, line))
    return rows


def day_chart(days: Sequence[dict[str, Any]]) -> Markup:
    """Bars of registrations and state changes per day (each day: {day, registered, changed})."""
    if not days:
        return Markup("<p>No registrations in this period.</p>")
    top = max(max(d["registered"], d["changed"]) for d in days) or 1
    slot = CHART_WIDTH / len(days)
    bar = max(1.0, slot / 2 - 1)
    inner = CHART_HEIGHT - 20
    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-labelledby="chart-title" width="{CHART_WIDTH}" height="{CHART_HEIGHT}">',
        '<title id="chart-title">Registrations and state changes per day</title>',
    ]
    for i, d in enumerate(days):
        x = i * slot
        for j, (key, css) in enumerate((("registered", "reg"), ("changed", "chg"))):
            h = inner * d[key] / top
            parts.append(
                f'<rect class="{css}" x="{x + j * (bar + 1):.1f}" y="{inner - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"><title>{escape(d["day"])}: '
                f"{d[key]} {key}</title></rect>"
            )
    parts.append(
        f'<text x="0" y="{CHART_HEIGHT - 4}">{escape(days[0]["day"])}</text>'
        f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT - 4}" text-anchor="end">'
        f"{escape(days[-1]['day'])} (most {top})</text></svg>"
    )
    return Markup("".join(parts))
