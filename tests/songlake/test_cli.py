"""The command line, driven through click's CliRunner on real catalog roots; outcomes are checked
through the library, as sqlite-utils does."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from catalog import current
from catalog.catalog import Catalog
from catalog.settings import load_settings
from catalog.tables import TableStore
from songlake.cli import main
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "DEMO"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def run(root: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["--root", str(root), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_first_five_minutes_from_the_readme(root: Path, tmp_path: Path) -> None:
    run(root, "init")
    run(root, "study", "create", "DEMO", "--name", "Demo study")
    out = run(root, "submit", str(EXAMPLE / "variant-call.song.json")).stdout
    aid = json.loads(out)["analysisId"]

    refused = run(root, "analysis", "publish", aid, ok=False)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error [missing.storage.objects]: ")

    uploaded = run(root, "upload", aid, "--dir", str(EXAMPLE)).stdout  # a list: a table
    assert uploaded.splitlines()[0].split() == ["objectId", "fileName", "objectSize", "objectMd5"]
    assert uploaded.endswith("(2 rows)\n")
    run(root, "analysis", "publish", aid, "--reason", "first release")
    history = run(root, "analysis", "history", aid).stdout
    assert history.splitlines()[0].split()[:3] == ["initialState", "updatedState", "updatedAt"]
    assert "first release" in history
    as_json = json.loads(run(root, "analysis", "history", aid, "--json").stdout)
    assert [h["reason"] for h in as_json] == ["first release"]

    catalog = Catalog(load_settings(root))
    doc = catalog.get_analysis("DEMO", aid)
    assert doc["analysisState"] == "PUBLISHED"
    assert catalog.history("DEMO", aid)[0]["reason"] == "first release"

    table = run(root, "sql", "SELECT analysis_id, analysis_state FROM analyses").stdout
    assert aid in table and "PUBLISHED" in table
    # the README's --as-of example: the version of the submit is the catalog before the publish
    query = "SELECT max(version) FROM commits WHERE operation = 'submit'"
    before = run(root, "sql", query, "--format", "csv").stdout.splitlines()[-1]
    then = "SELECT analysis_id, analysis_state FROM analyses"
    assert json.loads(run(root, "sql", then, "--as-of", before, "--format", "json").stdout) == [
        {"analysis_id": aid, "analysis_state": "UNPUBLISHED"}
    ]
    rows = json.loads(
        run(root, "sql", "SELECT file_name FROM files ORDER BY 1", "--format", "json").stdout
    )
    assert [r["file_name"] for r in rows] == [
        "example-tumour.variants.tsv",
        "example-tumour.vcf.gz",
    ]


def test_validation_errors_print_every_problem(root: Path, tmp_path: Path) -> None:
    run(root, "init")
    run(root, "study", "create", "DEMO")
    payload = json.loads((EXAMPLE / "variant-call.song.json").read_text())
    payload["samples"][0]["donor"]["gender"] = "Unknown"
    del payload["experiment"]["variantCallingTool"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(payload))
    result = run(root, "submit", str(bad), ok=False)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error [schema.violation]: ")
    assert any(line.strip().startswith("/samples/0/donor/gender:") for line in lines[1:])
    assert any(line.strip().startswith("/experiment/variantCallingTool:") for line in lines[1:])
    assert Catalog(load_settings(root)).count_analyses("DEMO") == 0


def test_submit_without_a_study_names_songs_error(root: Path, tmp_path: Path) -> None:
    """No --study and no studyId in the payload: Song's study.id.missing, nothing registered."""
    run(root, "init")
    run(root, "study", "create", "DEMO")
    payload = json.loads((EXAMPLE / "variant-call.song.json").read_text())
    del payload["studyId"]
    bad = tmp_path / "no-study.json"
    bad.write_text(json.dumps(payload))
    result = run(root, "submit", str(bad), ok=False)
    assert result.exit_code == 1
    assert result.stderr == "error [study.id.missing]: The studyId in the payload is missing\n"
    assert Catalog(load_settings(root)).count_analyses("DEMO") == 0


def test_submit_of_a_lone_surrogate_prints_the_error_not_a_traceback(
    root: Path, tmp_path: Path
) -> None:
    """It printed a 53-line traceback: now the error and its problem, and nothing registered."""
    run(root, "init")
    run(root, "study", "create", "DEMO")
    text = (EXAMPLE / "variant-call.song.json").read_text()
    bad = tmp_path / "surrogate.json"
    bad.write_text(text.replace('"studyId"', '"x": "\\ud800", "studyId"', 1))
    result = run(root, "submit", str(bad), ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("error [payload.parsing]: ")
    assert result.stderr.splitlines()[1:] == ["  /x: a lone surrogate is not text [utf8]"]
    assert Catalog(load_settings(root)).count_analyses("DEMO") == 0


def test_sql_has_a_time_limit(root: Path) -> None:
    run(root, "init")
    query = "SELECT count(*) FROM range(100000000000) a"
    result = run(root, "sql", query, "--timeout", "0.5", ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("error [gateway.timed.out]: ")


def test_sql_refuses_writes_and_files(root: Path) -> None:
    run(root, "init")
    for query in ["COPY (SELECT 1) TO 'x.csv'", "SELECT * FROM read_csv('/etc/passwd')"]:
        result = run(root, "sql", query, ok=False)
        assert result.exit_code == 1
        assert result.stderr.startswith("error [illegal.query.parameter]: ")


def test_update_export_and_time_travel(root: Path, tmp_path: Path) -> None:
    run(root, "init")
    run(root, "study", "create", "DEMO")
    aid = json.loads(run(root, "submit", str(EXAMPLE / "variant-call.song.json")).stdout)[
        "analysisId"
    ]
    before = run(root, "sql", "SELECT max(committed_at) FROM commits", "--format", "json").stdout
    version = json.loads(
        run(root, "sql", "SELECT count(*) AS n FROM commits", "--format", "json").stdout
    )[0]["n"]
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"experiment": {"variantCallingTool": "caller 2.0"}}))
    run(root, "analysis", "update", aid, str(patch), "--patch")

    now = json.loads(run(root, "sql", "SELECT data FROM analyses", "--format", "json").stdout)
    assert json.loads(now[0]["data"])["experiment"]["variantCallingTool"] == "caller 2.0"
    old = json.loads(
        run(
            root, "sql", "SELECT data FROM analyses", "--format", "json", "--as-of", str(version)
        ).stdout
    )
    assert json.loads(old[0]["data"])["experiment"]["variantCallingTool"] == "example-caller 1.0"
    assert before

    out = tmp_path / "export"
    run(root, "export", "--study", "DEMO", "-o", str(out))
    exported = json.loads((out / "DEMO" / f"{aid}.json").read_text())
    assert exported["experiment"]["variantCallingTool"] == "caller 2.0"
    assert "analysisId" not in exported and "objectId" not in json.dumps(exported)


def test_manifest_has_score_client_format(root: Path, tmp_path: Path) -> None:
    run(root, "init")
    run(root, "study", "create", "DEMO")
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data)
    aid = json.loads(run(root, "submit", str(data / "variant-call.song.json")).stdout)["analysisId"]
    text = run(root, "manifest", aid, "--dir", str(data)).stdout
    lines = text.split("\n")
    assert lines[0] == f"{aid}\t\t"
    files = Catalog(load_settings(root)).analysis_files("DEMO", aid)
    for f, line in zip(files, lines[1:], strict=False):
        assert line == f"{f['objectId']}\t{data / f['fileName']}\t{f['fileMd5sum']}"


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        out.append(f"{prefix}{name}")
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, f"{prefix}{name} "))
    return out


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Command line\n\n```\n(.*?)```", readme, re.S)
    assert block, "README has no Command line block"
    text = block.group(1)
    for command in _commands(main):
        words = command.split()
        if len(words) == 1:
            assert re.search(rf"^\s+{words[0]}\b", text, re.M), f"{command} undocumented"
        else:
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(words[0])), "")
            assert words[1] in line, f"'{command}' undocumented in README"


def test_required_options_are_shown_in_the_readme() -> None:
    """A required option (`analysis list --study S`) is shown with its command, so a newcomer
    does not learn it from `Error: Missing option`."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Command line\n\n```\n(.*?)```", readme, re.S)
    assert block
    lines = block.group(1).splitlines()
    for path, cmd in _every_command(main):
        for param in cmd.params:
            if isinstance(param, click.Option) and param.required:
                # the command's own line, or the line continuing its group (`analysis ... list`)
                shown = [ln for ln in lines if path[-1] in ln and any(o in ln for o in param.opts)]
                assert shown, f"songlake {' '.join(path)} {param.opts[-1]} not in README"


def _every_command(group: click.Group, path: tuple[str, ...] = ()):
    yield path, group
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _every_command(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"songlake {' '.join(path)} {'/'.join(param.opts)}".replace("  ", " ")
        for path, cmd in _every_command(main)
        for param in cmd.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert missing == []


#: the commands that print a list: a table, or JSON with --json (documents always print JSON)
LISTS = [
    "study list",
    "schema list",
    "analysis list",
    "analysis history",
    "upload",
    "compact",
    "repair",
    "status",
    "events status",
    "events replay",
    "storage verify",
    "storage sync",
]


def test_every_list_command_takes_json() -> None:
    commands = {" ".join(path): cmd for path, cmd in _every_command(main)}
    for name in LISTS:
        assert "--json" in [o for p in commands[name].params for o in p.opts], name


def test_times_song_fields_in_songs_format_songlakes_own_in_utc(root: Path, tmp_path: Path) -> None:
    """A field Song defines (an analysis type's createdAt) reads the same in `schema register`
    and `schema list`, in Song's format; songlake's own times (SQL results) are UTC with a Z."""
    run(root, "init")
    body = tmp_path / "alignment.json"
    body.write_text(
        json.dumps(
            {
                "name": "alignment",
                "schema": {
                    "type": "object",
                    "required": ["experiment"],
                    "properties": {"experiment": {"type": "object"}},
                },
            }
        )
    )
    registered = json.loads(run(root, "schema", "register", str(body)).stdout)["createdAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", registered)
    listed = json.loads(run(root, "schema", "list", "--json").stdout)
    assert [t["createdAt"] for t in listed if t["name"] == "alignment"] == [registered]
    assert registered in run(root, "schema", "list").stdout

    utc = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    query = "SELECT committed_at FROM commits ORDER BY version DESC LIMIT 1"
    (row,) = json.loads(run(root, "sql", query, "--format", "json").stdout)
    assert re.fullmatch(utc, row["committed_at"])
    csv_lines = run(root, "sql", query, "--format", "csv").stdout.split("\n")
    assert csv_lines == ["committed_at", row["committed_at"], ""]  # no \r for $(...)
    assert row["committed_at"] in run(root, "sql", query).stdout


def test_compact_refreshes_the_current_state_tables(root: Path) -> None:
    run(root, "init")
    run(root, "study", "create", "DEMO")
    aid = json.loads(run(root, "submit", str(EXAMPLE / "variant-call.song.json")).stdout)[
        "analysisId"
    ]
    compacted = run(root, "compact")
    assert "read model " in compacted.stderr and compacted.stderr.rstrip().endswith(": ok")
    tables = TableStore(load_settings(root).tables_dir)
    rows = current.read(tables, "current_analyses").to_pylist()
    assert [(r["analysis_id"], r["analysis_state"]) for r in rows] == [(aid, "UNPUBLISHED")]
    assert current.reflected(tables, "current_files") == rows[0]["catalog_version"]
