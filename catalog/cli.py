"""The ``songlake`` command line: each command opens the catalog, calls one method, prints.

Documents print as JSON; lists print as tables; errors print ``error [<errorId>]: <message>`` (and
the problem list for validation) and exit 1 (2 for usage errors).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from .errors import SonglakeError
from .settings import load_settings


class CatalogError(click.ClickException):
    exit_code = 1

    def __init__(self, err: SonglakeError) -> None:
        super().__init__(err.message)
        self.err = err

    def format_message(self) -> str:
        return self.err.message

    def show(self, file: Any = None) -> None:
        out = file or sys.stderr
        click.echo(f"error [{self.err.error_id}]: {self.err.message}", file=out)
        for p in self.err.problems:
            where = p.get("pointer") or "/"
            schema = f" ({p['schema']})" if p.get("schema") else ""
            click.echo(f"  {where}: {p.get('message')} [{p.get('rule')}]{schema}", file=out)


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=_default))


def echo_table(columns: list[str], rows: list[tuple[Any, ...]] | list[list[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    click.echo(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def actor() -> str:
    return os.environ.get("SONGLAKE_ACTOR") or os.environ.get("USER") or "cli"


class Context:
    def __init__(self, root: str | None) -> None:
        self.root = root
        self._catalog = None

    @property
    def settings(self):
        return load_settings(self.root)

    @property
    def catalog(self):
        if self._catalog is None:
            from .catalog import Catalog

            self._catalog = Catalog(self.settings)
        return self._catalog


pass_ctx = click.make_pass_decorator(Context)


class Group(click.Group):
    """Turns catalog errors raised by any command into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SonglakeError as err:
            raise CatalogError(err) from err


@click.group(cls=Group)
@click.option(
    "--root",
    envvar="SONGLAKE_ROOT",
    default=None,
    metavar="DIR",
    help="Catalog root (default: $SONGLAKE_ROOT, else ./catalog-data).",
)
@click.version_option(package_name="songlake")
@click.pass_context
def main(ctx: click.Context, root: str | None) -> None:
    """songlake: a file-system-native, Song-compatible metadata catalog."""
    ctx.obj = Context(root)


# -- init / serve -----------------------------------------------------------------------------


@main.command()
@pass_ctx
def init(c: Context) -> None:
    """Create a catalog root: tables, inbox, object store, bundled analysis types."""
    from .catalog import Catalog

    catalog = Catalog.init(c.settings)
    click.echo(f"catalog ready at {catalog.settings.root}")
    click.echo(f"analysis types: {', '.join(catalog.registry.names())}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--no-watch", is_flag=True, help="Serve the API without the inbox watcher.")
@pass_ctx
def serve(c: Context, host: str, port: int, no_watch: bool) -> None:
    """Serve the Song-compatible API (the inbox watcher comes with its own issue)."""
    from api.app import create_app
    from api.server import serve as run_server

    from .catalog import Catalog

    settings = c.settings
    if not settings.tables_dir.exists():
        Catalog.init(settings)
    app = create_app(c.catalog, settings=settings)
    if not no_watch:
        click.echo(
            "note: the inbox watcher is not part of this build yet; serving the API only", err=True
        )
    click.echo(f"songlake serving {settings.root} on http://{host}:{port}", err=True)
    run_server(app, host=host, port=port)


# -- studies ------------------------------------------------------------------------------------


@main.group()
def study() -> None:
    """Create, list and show studies."""


@study.command("create")
@click.argument("study_id")
@click.option("--name")
@click.option("--organization")
@click.option("--description")
@click.option("--info", help="JSON object of extra study information.")
@pass_ctx
def study_create(
    c: Context,
    study_id: str,
    name: str | None,
    organization: str | None,
    description: str | None,
    info: str | None,
) -> None:
    """Create a study."""
    body = {
        "studyId": study_id,
        "name": name,
        "organization": organization,
        "description": description,
        "info": _json_option(info, "--info"),
    }
    echo_json(c.catalog.create_study(body, actor=actor()))


@study.command("list")
@pass_ctx
def study_list(c: Context) -> None:
    """List studies with their analysis counts by state."""
    cat = c.catalog
    rows = []
    for sid in cat.list_studies():
        s = cat.get_study(sid)
        rows.append(
            (
                sid,
                s.get("name"),
                cat.count_analyses(sid, ["UNPUBLISHED"]),
                cat.count_analyses(sid, ["PUBLISHED"]),
                cat.count_analyses(sid, ["SUPPRESSED"]),
            )
        )
    echo_table(["studyId", "name", "unpublished", "published", "suppressed"], rows)


@study.command("show")
@click.argument("study_id")
@pass_ctx
def study_show(c: Context, study_id: str) -> None:
    """Show one study."""
    echo_json(c.catalog.get_study(study_id))


# -- schemas ------------------------------------------------------------------------------------


@main.group()
def schema() -> None:
    """Register, list and show analysis types."""


@schema.command("register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def schema_register(c: Context, file: Path) -> None:
    """Register a new version of an analysis type from a {name, schema, options} file."""
    from .model import parse_payload

    s = c.settings
    body = parse_payload(
        file.read_bytes(), max_bytes=s.max_payload_bytes, max_depth=s.max_payload_depth
    )
    atype = c.catalog.register_type(body, actor=actor())
    echo_json(atype.to_json(rendered=False))


@schema.command("list")
@pass_ctx
def schema_list(c: Context) -> None:
    """List every version of every analysis type."""
    rows = [
        (t.name, t.version, ", ".join(t.file_types) or "(any)", t.created_at)
        for t in c.catalog.registry.all()
    ]
    echo_table(["name", "version", "fileTypes", "createdAt"], rows)


@schema.command("show")
@click.argument("name")
@click.option("--version", type=int, help="Version (default: latest).")
@click.option(
    "--unrendered", is_flag=True, help="The schema as registered, not merged on the base."
)
@pass_ctx
def schema_show(c: Context, name: str, version: int | None, unrendered: bool) -> None:
    """Show one analysis type (rendered onto the base schema unless --unrendered)."""
    echo_json(c.catalog.registry.get(name, version).to_json(rendered=not unrendered))


# -- submit / upload / manifest -----------------------------------------------------------------


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--study", "study_id", help="Target study (default: the payload's studyId).")
@click.option(
    "--allow-duplicates", is_flag=True, help="Accept files whose md5 is already registered."
)
@pass_ctx
def submit(c: Context, file: Path, study_id: str | None, allow_duplicates: bool) -> None:
    """Register a payload directly (its files are uploaded separately)."""
    raw = file.read_bytes()
    if study_id is None:
        study_id = _payload_study(raw, c)
    aid = c.catalog.submit(raw, study_id, allow_duplicates=allow_duplicates, actor=actor())
    echo_json({"analysisId": aid, "status": "OK"})


def _payload_study(raw: bytes, c: Context) -> str:
    from .errors import BadRequest
    from .model import parse_payload

    s = c.settings
    payload = parse_payload(raw, max_bytes=s.max_payload_bytes, max_depth=s.max_payload_depth)
    sid = payload.get("studyId")
    if not isinstance(sid, str) or not sid:
        raise BadRequest("The studyId in the payload is missing", error_id="study.id.missing")
    return sid


@main.command()
@click.argument("analysis_id")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@pass_ctx
def upload(c: Context, analysis_id: str, directory: Path) -> None:
    """Put an analysis' files into object storage, verified by size and md5."""
    echo_json(c.catalog.upload(analysis_id, directory))


@main.command()
@click.argument("analysis_id")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the manifest here instead of standard output.",
)
@pass_ctx
def manifest(c: Context, analysis_id: str, directory: Path, output: Path | None) -> None:
    """Write a score-client upload manifest for an analysis."""
    text = c.catalog.manifest(analysis_id, directory)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


# -- analyses -------------------------------------------------------------------------------------


@main.group()
def analysis() -> None:
    """Show, list and change analyses."""


@analysis.command("show")
@click.argument("analysis_id")
@pass_ctx
def analysis_show(c: Context, analysis_id: str) -> None:
    """Show an analysis as Song's GET returns it."""
    echo_json(c.catalog.find_analysis(analysis_id))


@analysis.command("list")
@click.option("--study", "study_id", required=True)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["UNPUBLISHED", "PUBLISHED", "SUPPRESSED"]),
    help="Repeatable; default: every state.",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=0))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print Song's paginated JSON.")
@pass_ctx
def analysis_list(
    c: Context, study_id: str, states: tuple[str, ...], limit: int, offset: int, as_json: bool
) -> None:
    """List a study's analyses, sorted by analysisId."""
    page = c.catalog.page_analyses(
        study_id, states or ("UNPUBLISHED", "PUBLISHED", "SUPPRESSED"), limit=limit, offset=offset
    )
    if as_json:
        echo_json(page)
        return
    rows = [
        (
            a["analysisId"],
            a["analysisState"],
            f"{a['analysisType']['name']}@{a['analysisType']['version']}",
            len(a["samples"]),
            len(a["files"]),
            a["createdAt"],
        )
        for a in page["analyses"]
    ]
    echo_table(["analysisId", "state", "type", "samples", "files", "createdAt"], rows)
    click.echo(f"{page['totalAnalyses']} in total", err=True)


@analysis.command("history")
@click.argument("analysis_id")
@pass_ctx
def analysis_history(c: Context, analysis_id: str) -> None:
    """The state history of an analysis, with actor and reason."""
    cat = c.catalog
    echo_json(cat.history(cat.study_of(analysis_id), analysis_id))


def _transition(action: str):
    @click.argument("analysis_id")
    @click.option("--reason", help="Why (kept in the history).")
    @pass_ctx
    def command(c: Context, analysis_id: str, reason: str | None, **kw: Any) -> None:
        cat = c.catalog
        fn = getattr(cat, action)
        echo_json(
            {
                "message": fn(
                    cat.study_of(analysis_id), analysis_id, actor=actor(), reason=reason, **kw
                )
            }
        )

    return command


analysis.command(
    "publish", help="Publish: every file must be in object storage, size and md5 matching."
)(
    click.option("--ignore-undefined-md5", "ignore_undefined_md5", is_flag=True)(
        _transition("publish")
    )
)
analysis.command("unpublish", help="Unpublish a published analysis.")(_transition("unpublish"))
analysis.command("suppress", help="Suppress an analysis (from any state).")(_transition("suppress"))


@analysis.command("update")
@click.argument("analysis_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--patch", is_flag=True, help="Apply FILE as a JSON merge patch instead of replacing."
)
@pass_ctx
def analysis_update(c: Context, analysis_id: str, file: Path, patch: bool) -> None:
    """Replace (or merge-patch) an analysis' dynamic data; earlier versions are kept."""
    from .model import parse_payload

    s = c.settings
    body = parse_payload(
        file.read_bytes(), max_bytes=s.max_payload_bytes, max_depth=s.max_payload_depth
    )
    cat = c.catalog
    study_id = cat.study_of(analysis_id)
    fn = cat.patch_analysis if patch else cat.update_analysis
    echo_json(fn(study_id, analysis_id, body, actor=actor()))


# -- export / sql ---------------------------------------------------------------------------------


@main.command()
@click.option("--study", "study_id")
@click.option("--analysis", "analysis_ids", multiple=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def export(c: Context, study_id: str | None, analysis_ids: tuple[str, ...], output: Path) -> None:
    """Export resubmittable payloads to <output>/<studyId>/<analysisId>.json."""
    from .export import group_by_study, write_export

    if bool(study_id) == bool(analysis_ids):
        raise click.UsageError("give either --study or --analysis (repeatable)")
    docs = c.catalog.export_docs(study_id=study_id, analysis_ids=analysis_ids)
    written = write_export(group_by_study(docs), docs, output)
    click.echo(f"exported {len(written)} payload(s) to {output}", err=True)


@main.command()
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--as-of", help="A catalog version (integer) or an ISO-8601 time.")
@pass_ctx
def sql(c: Context, query: str, fmt: str, as_of: str | None) -> None:
    """Run a read-only SELECT over views named after the tables."""
    from . import sql as sqlmod
    from .tables import TableStore

    s = c.settings
    tables = TableStore(s.tables_dir)
    versions = tables.versions_as_of(as_of) if as_of else None
    columns, rows = sqlmod.run(tables, query, versions=versions, row_limit=s.sql_row_limit)
    if fmt == "json":
        echo_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(
            [[_default(v) if isinstance(v, (datetime, date)) else v for v in r] for r in rows]
        )
        click.echo(buf.getvalue(), nl=False)
    else:
        echo_table(columns, rows)


@main.command()
@pass_ctx
def compact(c: Context) -> None:
    """Compact every table's small Parquet files (also done automatically)."""
    from .tables import TableStore

    counts = TableStore(c.settings.tables_dir).compact()
    echo_table(["table", "files"], sorted(counts.items()))


@main.command()
@click.option(
    "--min-age",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Only rows older than this many seconds (younger ones may still be committing).",
)
@click.option("--dry-run", is_flag=True, help="List the orphans without deleting them.")
@pass_ctx
def repair(c: Context, min_age: float, dry_run: bool) -> None:
    """Remove invisible orphan rows left by a crash between the commits of a batch."""
    cat = c.catalog
    if dry_run:
        found = cat.orphans(min_age_seconds=min_age)
        echo_table(["table", "orphan analyses"], [(k, len(v)) for k, v in sorted(found.items())])
        return
    deleted = cat.repair(min_age_seconds=min_age, actor=actor())
    echo_table(["table", "rows deleted"], sorted(deleted.items()))


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from exc


if __name__ == "__main__":  # pragma: no cover
    main()
