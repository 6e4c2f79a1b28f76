"""Payload properties under mutation (hypothesis): whatever the bytes, the library answers with an
analysis or a SonglakeError carrying an error id; a refused payload writes nothing; an accepted
one reads back as it was sent. Mutations of the bundled example and of schema-valid payloads:
wrong types, missing keys, unicode (lone surrogates, separators, controls), huge strings,
NaN/1e309, duplicate keys, deep nesting. Bounded: a few dozen examples each."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.errors import SonglakeError
from tests.conftest import REPO, STUDY

EXAMPLE = json.loads((REPO / "examples" / "DEMO" / "variant-call.song.json").read_text())
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

HOSTILE_TEXT = st.sampled_from(
    ["", "\ud800", "x\u2028y", "\u0085", "\x00", "\x9f", "a" * 100_000, "../x", "∆é🙂", " "]
)
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(min_value=1, max_value=200).map(lambda n: json.loads("[" * n + "]" * n)),
)


def _paths(doc: Any, here: tuple = ()) -> list[tuple]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*here, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*here, i)))
    return out


def _mutate(doc: Any, path: tuple, how: str, value: Any) -> Any:
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "delete" and isinstance(parent, list):
        parent.pop(last)
    else:
        parent[last] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> bytes:
    doc = json.loads(json.dumps(base))
    doc["studyId"] = STUDY
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        doc = _mutate(doc, path, draw(st.sampled_from(["replace", "delete"])), draw(HOSTILE))
    text = json.dumps(doc, allow_nan=True)
    if draw(st.booleans()) and text.startswith("{"):
        text = '{"studyId": "XYZ", ' + text[1:]  # a duplicate key (the last one wins)
    return text.encode("utf-8", "surrogatepass")


def _valid(payloads: Any) -> dict:
    return payloads.variant_call(files=[payloads.file("a.vcf.gz")])


def _check(catalog: Any, raw: bytes) -> str | None:
    before = catalog.tables.versions()
    try:
        aid = catalog.submit(raw, STUDY)
    except SonglakeError as exc:
        assert exc.error_id and exc.error_id in _known_ids(), exc.error_id
        assert catalog.tables.versions() == before, "a refused payload wrote rows"
        return None
    sent = json.loads(raw.decode("utf-8", "surrogatepass"))
    doc = catalog.get_analysis(STUDY, aid)
    assert doc["studyId"] == STUDY
    got = {(f["fileName"], f["fileSize"], f["fileMd5sum"]) for f in doc["files"]}
    assert got == {(f["fileName"], f["fileSize"], f["fileMd5sum"]) for f in sent["files"]}
    assert [s["submitterSampleId"] for s in doc["samples"]] == [
        s["submitterSampleId"] for s in sent["samples"]
    ]
    return aid


def _known_ids() -> set[str]:
    from api.errors import STATUS  # the one table of ids (a test may read the API's table)

    return set(STATUS)


@FUZZ
@given(data=st.data())
def test_mutations_of_a_valid_payload_answer_an_analysis_or_a_song_error(
    catalog, payloads, data
) -> None:
    _check(catalog, data.draw(mutated(_valid(payloads))))


@FUZZ
@given(data=st.data())
def test_mutations_of_the_bundled_example_answer_an_analysis_or_a_song_error(catalog, data) -> None:
    _check(catalog, data.draw(mutated(EXAMPLE)))


def test_the_bundled_example_itself_is_accepted(catalog) -> None:
    assert _check(catalog, json.dumps({**EXAMPLE, "studyId": STUDY}).encode()) is not None
