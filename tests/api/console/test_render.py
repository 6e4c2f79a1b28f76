"""What the console draws from data: marked sidecars (escaped), diffs and the day chart."""

from __future__ import annotations

from api.console.render import day_chart, diff_lines, marked_json, pointer_parts


def test_pointers_mark_their_values_and_text_stays_text() -> None:
    text = '{"a": [1, {"b~c": "<i>"}], "d/e": null}'
    out = marked_json(text, ["/a/1/b~0c", "#/d~1e", "not-a-pointer", None])
    assert '<mark id="pointer-a/1/b~c">&#34;&lt;i&gt;&#34;</mark>' in out
    assert '<mark id="pointer-d/e">null</mark>' in out
    assert "<i>" not in out
    whole = marked_json('{"x": 1}', [""])  # the root itself
    assert whole.startswith('<mark id="pointer-">{')
    # a sidecar that does not parse is shown as it is, escaped, with nothing marked
    assert marked_json('{"x": <script>', ["/x"]) == "{&#34;x&#34;: &lt;script&gt;"
    assert pointer_parts("/a~1b/~0") == ["a/b", "~"] and pointer_parts("x") is None


def test_a_diff_of_two_versions_and_an_empty_one() -> None:
    rows = diff_lines({"a": 1, "b": [1, 2]}, {"a": 2, "b": [1, 2]})
    assert ("del", '-  "a": 1,') in rows and ("add", '+  "a": 2,') in rows
    assert rows[0][0] == "hunk"
    assert diff_lines({"a": 1}, {"a": 1}) == []


def test_the_day_chart_is_inline_svg_with_a_title_per_bar() -> None:
    days = [
        {"day": "2026-12-05", "registered": 4, "changed": 0},
        {"day": "2026-12-06", "registered": 2, "changed": 1},
    ]
    svg = str(day_chart(days))
    assert svg.startswith("<svg") and 'role="img"' in svg and svg.count("<rect") == 4
    assert "<title>2026-12-05: 4 registered</title>" in svg and "(most 4)" in svg
    assert "No registrations" in day_chart([])
