"""The ``songlake`` command line: each command opens the catalog, calls one method, prints.

Documents (one analysis, study, type, submit answer) print as JSON; lists print as tables, or as
JSON with ``--json``. Fields Song defines keep Song's time format; songlake's own times are UTC
ISO-8601 with a ``Z`` (``catalog.model.utc_iso``). Errors print ``error [<errorId>]: <message>``
(and the problem list for validation) and exit 1 (2 for usage errors).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from catalog.errors import SonglakeError, StudyIdMissing
from catalog.model import STATES, song_time, utc_iso
from catalog.settings import Settings, load_settings

if TYPE_CHECKING:
    from catalog.catalog import Catalog

F = TypeVar("F", bound=Callable[..., Any])


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
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
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


def json_option(what: str = "the list") -> Callable[[F], F]:
    """``--json``: print `what` as JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def echo_list(records: list[dict[str, Any]], as_json: bool) -> None:
    """A list: a table with a column per key, or the records as JSON (``--json``)."""
    if as_json:
        echo_json(records)
        return
    columns = list(records[0]) if records else []
    echo_table(columns, [[r.get(name) for name in columns] for r in records])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_iso(value) or ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(message: str) -> NoReturn:
    """One line on stderr, ``error: <message>``, and exit 1 (for failures outside Song's ids)."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(1)


def actor() -> str:
    return os.environ.get("SONGLAKE_ACTOR") or os.environ.get("USER") or "cli"


class Context:
    """What a command works on: the settings (songlake.toml read once) and, opened on first use,
    the catalog."""

    def __init__(self, root: str | None) -> None:
        self.root = root
        self._settings: Settings | None = None
        self._catalog: Catalog | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.root)
        return self._settings

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            # pyarrow and deltalake load only for the commands that need them (start-up time)
            from catalog.catalog import Catalog

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
    help="Catalog root: a folder or s3://BUCKET/PREFIX (default: $SONGLAKE_ROOT, else "
    "./catalog-data).",
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
    from catalog.catalog import Catalog

    catalog = Catalog.init(c.settings)
    click.echo(f"catalog ready at {catalog.settings.location}")
    click.echo(f"analysis types: {', '.join(catalog.registry.names())}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=int, help="Port to listen on (0: any free one)."
)
@click.option("--no-watch", is_flag=True, help="Serve the API without the inbox watcher.")
@click.option("--threads", type=int, default=None, help="API worker threads (api_threads).")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Switch API auth off: anyone who can reach the port can write (development only).",
)
@pass_ctx
def serve(
    c: Context, host: str, port: int, no_watch: bool, threads: int | None, no_auth: bool
) -> None:
    """Serve the Song-compatible API, with the inbox watcher unless --no-watch."""
    from api.server import bind_problem, listen_problem
    from songlake import serve as serving

    problem = listen_problem(host, port)  # before anything is opened, started or announced
    if problem:
        fail(problem)
    settings, notices = serving.prepare(c.settings, no_auth=no_auth)
    for notice in notices:
        click.echo(notice, err=True)
    c.catalog.current.timed = True  # a long-running process: the current_* lag is bounded
    try:
        serving.serve(
            c.catalog,
            settings,
            host=host,
            port=port,
            threads=threads or settings.api_threads,
            watch=not no_watch,
            announce=lambda text: click.echo(text, err=True),
        )
    except OSError as exc:  # the port was taken between the check and the bind
        if exc.errno != errno.EADDRINUSE:
            raise
        fail(bind_problem(exc, host, port))


# -- the watcher: watch / ingest / status ---------------------------------------------------------


@main.command()
@click.option(
    "--polling",
    is_flag=True,
    help="Scan every watch_poll_interval seconds instead of using inotify (network mounts).",
)
@pass_ctx
def watch(c: Context, polling: bool) -> None:
    """Watch the inbox (and watch_folders) and register every sidecar dropped there."""
    import signal
    import threading

    from watcher import Watcher
    from watcher.logs import configure

    configure()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    c.catalog.current.timed = True
    watcher = Watcher(c.catalog, c.settings, polling=polling).start()
    folders = ", ".join(f.path for f in watcher.folders)
    click.echo(f"songlake watching {folders} (Ctrl-C to stop)", err=True)
    try:
        stop.wait()
    finally:
        watcher.stop()


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_ctx
def ingest(c: Context, paths: tuple[Path, ...], quiet: bool) -> None:
    """Register every sidecar under PATH... now (a backfill), rejected ones again too."""
    import logging

    from tqdm import tqdm

    from watcher import Watcher, WatcherBusy, watched_folders, watcher_running
    from watcher.layout import Folder
    from watcher.logs import configure

    settings = c.settings
    pid = watcher_running(settings)
    watched = [Folder.at(f) for f in watched_folders(settings)]
    if pid is not None and any(f.contains(os.path.realpath(p)) for p in paths for f in watched):
        raise WatcherBusy(
            f"A watcher (pid {pid}) is watching {settings.root}; it takes what is dropped into "
            "its folders by itself ('touch' a sidecar to retry it)"
        )
    configure(logging.WARNING)
    tqdm.monitor_interval = 0  # no monitor thread: the bar is updated on every outcome anyway
    bar = tqdm(total=0, unit="sidecar", disable=quiet, file=sys.stderr, dynamic_ncols=True)

    def total(n: int) -> None:
        bar.total = n
        bar.refresh()

    watcher = Watcher(c.catalog, settings).start(watch=False)
    try:
        report = watcher.ingest(
            [str(p) for p in paths], on_total=total, on_outcome=lambda *_: bar.update(1)
        )
    finally:
        watcher.stop()
        bar.close()
    counts = report.outcomes
    click.echo(
        f"{report.total} sidecar(s): {counts['registered']} registered, "
        f"{counts['rejected']} rejected, {counts['pending']} waiting for files"
    )
    for path, (outcome, detail) in list(report.problems.items())[:20]:
        click.echo(f"  {outcome}: {path}: {detail}")
    if counts["rejected"] or counts["pending"]:
        raise click.exceptions.Exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--limit",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Latest errors and waiting sidecars to show.",
)
@pass_ctx
def status(c: Context, as_json: bool, limit: int) -> None:
    """Pending, registered and rejected sidecars per study, and the latest errors."""
    from catalog.store import open_lease
    from catalog.tables import TableStore
    from catalog.write.commit import writer_report
    from watcher import watcher_running
    from watcher.status import report, short

    settings = c.settings
    pid = watcher_running(settings)
    r = report(settings.state_dir, limit=limit, watcher_pid=pid)
    writers = writer_report(TableStore(settings.tables_dir), open_lease(settings))
    if as_json:
        echo_json({**r.to_dict(), "writer": writers})
        return
    click.echo(f"watcher: {f'running (pid {pid})' if pid else 'not running'}")
    click.echo(f"writer:  {describe_writers(writers)}")
    columns = ["studyId", "pending", "registering", "registered", "rejected"]
    rows = [(sid, *(n.get(k, 0) for k in columns[1:])) for sid, n in r.studies.items()]
    echo_table(columns, rows)
    if r.errors:
        click.echo("\nlatest errors:")
        rows = [(e["at"], e["errorId"], short(e["path"], 50), e["message"]) for e in r.errors]
        echo_table(["at", "errorId", "sidecar", "message"], rows)
    if r.pending:
        click.echo("\nwaiting for files:")
        rows = [(p["since"], short(p["path"], 50), "; ".join(p["waitingFor"])) for p in r.pending]
        echo_table(["since", "sidecar", "waiting for"], rows)


def describe_writers(writers: dict[str, Any]) -> str:
    """One line: who holds the writer lease (or held it last), and the last commit."""
    lease, last = writers["lease"], writers["last_commit"]
    if lease.get("held"):
        text = f"lease held by {lease['holder']} since {lease['since']} (epoch {lease['epoch']})"
    elif lease.get("holder"):
        text = f"lease free (last held by {lease['holder']}, epoch {lease['epoch']})"
    else:
        text = "lease never taken"
    if last:
        text += (
            f"; last commit v{last['version']} {last['operation'] or ''} at "
            f"{last['committedAt']} by {last['writer'] or 'unknown'}"
        )
    return text


# -- studies ------------------------------------------------------------------------------------


@main.group()
def study() -> None:
    """Create, list and show studies."""


@study.command("create")
@click.argument("study_id")
@click.option("--name", help="The study's name.")
@click.option("--organization", help="The organization running the study.")
@click.option("--description", help="A description of the study.")
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
@json_option("the studies")
@pass_ctx
def study_list(c: Context, as_json: bool) -> None:
    """List studies with their analysis counts by state."""
    cat = c.catalog
    rows = [
        {
            "studyId": sid,
            "name": cat.get_study(sid).get("name"),
            **{state.lower(): cat.count_analyses(sid, [state]) for state in STATES},
        }
        for sid in cat.list_studies()
    ]
    echo_list(rows, as_json)


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
    from catalog.model import parse_payload

    s = c.settings
    body = parse_payload(
        file.read_bytes(), max_bytes=s.max_payload_bytes, max_depth=s.max_payload_depth
    )
    atype = c.catalog.register_type(body, actor=actor())
    echo_json(atype.to_json(rendered=False))


@schema.command("list")
@json_option("the types")
@pass_ctx
def schema_list(c: Context, as_json: bool) -> None:
    """List every version of every analysis type (fileTypes empty: any)."""
    rows = [
        {
            "name": t.name,
            "version": t.version,
            "fileTypes": list(t.file_types),
            "createdAt": song_time(t.created_at),  # as Song's GET /schemas shows it
        }
        for t in c.catalog.registry.all()
    ]
    echo_list(rows, as_json)


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
    from catalog.model import parse_payload

    s = c.settings
    payload = parse_payload(raw, max_bytes=s.max_payload_bytes, max_depth=s.max_payload_depth)
    sid = payload.get("studyId")
    if not isinstance(sid, str) or not sid:
        raise StudyIdMissing()
    return sid


@main.command()
@click.argument("analysis_id")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The folder holding the analysis' files, named as in the payload.",
)
@json_option("the stored objects")
@pass_ctx
def upload(c: Context, analysis_id: str, directory: Path, as_json: bool) -> None:
    """Put an analysis' files into object storage, verified by size and md5."""
    echo_list(c.catalog.upload(analysis_id, directory), as_json)


@main.command()
@click.argument("analysis_id")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The folder holding the analysis' files (their paths go into the manifest).",
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
@click.option(
    "--study", "study_id", required=True, metavar="S", help="The study whose analyses to list."
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    help="Repeatable; default: every state.",
)
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(min=0), help="Page size."
)
@click.option(
    "--offset",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Analyses to skip (sorted by analysisId).",
)
@click.option("--json", "as_json", is_flag=True, help="Print Song's paginated JSON.")
@pass_ctx
def analysis_list(
    c: Context, study_id: str, states: tuple[str, ...], limit: int, offset: int, as_json: bool
) -> None:
    """List a study's analyses, sorted by analysisId."""
    page = c.catalog.page_analyses(study_id, states or STATES, limit=limit, offset=offset)
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
@json_option("the history")
@pass_ctx
def analysis_history(c: Context, analysis_id: str, as_json: bool) -> None:
    """The state history of an analysis, with actor and reason."""
    cat = c.catalog
    echo_list(cat.history(cat.study_of(analysis_id), analysis_id), as_json)


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
    click.option(
        "--ignore-undefined-md5",
        "ignore_undefined_md5",
        is_flag=True,
        help="Accept stored objects whose .meta records no md5 (Song's ignoreUndefinedMd5).",
    )(_transition("publish"))
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
    from catalog.model import parse_payload

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
@click.option("--study", "study_id", metavar="S", help="Every analysis of this study.")
@click.option(
    "--analysis",
    "analysis_ids",
    multiple=True,
    metavar="ID",
    help="This analysis; repeat for several: --analysis ID1 --analysis ID2.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write <studyId>/<analysisId>.json into.",
)
@pass_ctx
def export(c: Context, study_id: str | None, analysis_ids: tuple[str, ...], output: Path) -> None:
    """Export resubmittable payloads to <output>/<studyId>/<analysisId>.json."""
    from catalog.read.export import group_by_study, write_export

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
    help="Output format.",
)
@click.option("--as-of", help="A catalog version (integer) or an ISO-8601 time.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Seconds the query may run before it is stopped (default: the sql_timeout setting).",
)
@pass_ctx
def sql(c: Context, query: str, fmt: str, as_of: str | None, timeout: float | None) -> None:
    """Run a read-only SELECT over views named after the tables."""
    from catalog import sql as sqlmod
    from catalog.tables import TableStore

    s = c.settings
    tables = TableStore(s.tables_dir)
    versions = tables.versions_as_of(as_of, retention_hours=s.vacuum_retention) if as_of else None
    columns, rows = sqlmod.run(
        tables,
        query,
        versions=versions,
        row_limit=s.sql_row_limit,
        timeout=s.sql_timeout if timeout is None else timeout,
        memory_limit=s.sql_memory_limit,
    )
    if fmt == "json":
        echo_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")  # not \r\n: $(...) must not keep a \r
        writer.writerow(columns)
        writer.writerows(
            [[_default(v) if isinstance(v, (datetime, date)) else v for v in r] for r in rows]
        )
        click.echo(buf.getvalue(), nl=False)
    else:
        echo_table(columns, rows)


@main.command()
@json_option("the file counts")
@pass_ctx
def compact(c: Context, as_json: bool) -> None:
    """Compact every table's small Parquet files and vacuum the files replaced longer than
    vacuum_retention ago (both also done automatically), then refresh the current_* tables and
    check this machine's read-model file (rebuilt if damaged)."""
    from catalog import current
    from catalog.store import open_lease
    from catalog.tables import TableStore

    s = c.settings
    tables = TableStore(s.tables_dir, vacuum_retention_hours=s.vacuum_retention)
    with open_lease(s).hold():  # a rewrite commit: one writer at a time
        counts = tables.compact()  # then vacuum: files replaced over vacuum_retention ago
    current.refresh(tables, retention_hours=s.vacuum_retention)  # derived: outside the lease
    model = c.catalog.model  # this machine's read-model file: SQLite's whole-file check
    checked = "ok" if model.check_integrity() else "damaged: rebuilt from the history tables"
    click.echo(f"read model {model.path}: {checked}", err=True)
    echo_list([{"table": k, "files": v} for k, v in sorted(counts.items())], as_json)


@main.command()
@click.option(
    "--min-age",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Only rows older than this many seconds (younger ones may still be committing).",
)
@click.option("--dry-run", is_flag=True, help="List the orphans without deleting them.")
@json_option("the counts")
@pass_ctx
def repair(c: Context, min_age: float, dry_run: bool, as_json: bool) -> None:
    """Remove invisible orphan rows left by a crash between the commits of a batch."""
    cat = c.catalog
    if dry_run:
        found = cat.orphans(min_age_seconds=min_age)
        rows = [{"table": k, "orphanAnalyses": len(v)} for k, v in sorted(found.items())]
    else:
        deleted = cat.repair(min_age_seconds=min_age, actor=actor())
        rows = [{"table": k, "rowsDeleted": v} for k, v in sorted(deleted.items())]
    echo_list(rows, as_json)


# -- events -------------------------------------------------------------------------------------


@main.group()
def events() -> None:
    """Song's analysis messages: deliver them to the configured sinks, watch, replay."""


def _log_to_stderr() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


@events.command("run")
@click.option("--once", is_flag=True, help="Deliver what is committed now, then exit.")
@pass_ctx
def events_run(c: Context, once: bool) -> None:
    """Run the event dispatcher alone (serve runs one too; one per root delivers at a time)."""
    import signal

    from catalog import events as ev

    _log_to_stderr()
    d = ev.Dispatcher(c.catalog)
    for _, problem in d.problems:
        click.echo(f"error: {problem} (left out; the other sinks run)", err=True)
    if not d.workers:
        raise click.ClickException("no events sink can run")
    signal.signal(signal.SIGTERM, lambda *_: d.stop_event.set())
    d.start(standby=not once)
    try:
        if once:
            while not d.wait_idle(5.0):
                pass
        else:
            d.stop_event.wait()
    except KeyboardInterrupt:
        pass
    finally:
        d.stop()
    failing = [w.name for w in d.workers if w.error]
    if once and (d.problems or failing):
        raise click.ClickException(
            "events sink(s) not delivering: " + ", ".join([n for n, _ in d.problems] + failing)
        )


@events.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def events_status(c: Context, as_json: bool) -> None:
    """Lag, failures and dead letters of every sink."""
    from catalog import events as ev

    text, rows = ev.status(c.settings)
    if as_json:
        echo_json({"dispatcher": text, "sinks": rows})
        return
    click.echo(text)
    columns = [
        "sink",
        "type",
        "status",
        "lag",
        "lag_seconds",
        "delivered",
        "failures",
        "dead_letters",
        "last_error",
    ]
    echo_table(columns, [[r[k] for k in columns] for r in rows])


@events.command("replay")
@click.option(
    "--from",
    "from_",
    required=True,
    metavar="VERSION|TIME",
    help="A catalog version (its changes and every later one) or an ISO-8601 time.",
)
@click.option("--sink", "sinks", multiple=True, help="Only this sink (repeatable).")
@json_option("what was re-sent")
@pass_ctx
def events_replay(c: Context, from_: str, sinks: tuple[str, ...], as_json: bool) -> None:
    """Send the messages of committed changes again, from a version or time on."""
    import time

    from catalog import events as ev
    from catalog.events.outbox import cut_from

    settings = c.settings
    cut = cut_from(settings, from_)
    d = ev.Dispatcher(c.catalog, only=list(sinks) or None)
    names = [w.name for w in d.workers]
    if not d.try_lock():
        name, folder = ev.request_replay(settings, cut, names), ev.replay_folder(settings)
        deadline = time.monotonic() + 10
        while folder.exists(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        taken = "taken" if not folder.exists(name) else "queued"
        click.echo(f"replay from {from_} {taken} by the running dispatcher ({ev.holder(d)})")
        return
    ev.rewind_saved(settings, cut, names)
    d.start(standby=False)
    try:
        while not d.wait_idle(5.0):
            pass
    finally:
        d.stop()
    rows = [
        {
            "sink": w.name,
            "re-sent": w.sent,
            "failures": w.stats["failures"],
            "dead_letters": w.stats["dead_letters"],
            "error": w.error,
        }
        for w in d.workers
    ]
    echo_list(rows, as_json)


# -- storage ------------------------------------------------------------------------------------


@main.group()
def storage() -> None:
    """Check object storage against the registry, and upload what is missing."""


def _bars(quiet: bool, total: int) -> tuple[Any, Any]:
    from tqdm import tqdm

    listing = tqdm(desc="listing", unit="key", disable=quiet, file=sys.stderr, leave=False)
    checking = tqdm(
        desc="checking", total=total, unit="file", disable=quiet, file=sys.stderr, leave=False
    )
    return listing, checking


def _print_findings(findings: list[Any], limit: int) -> None:
    for f in findings[:limit]:
        click.echo(
            f"  {f.kind}: {f.object_id} ({f.study_id}/{f.analysis_id}, {f.state}): {f.message}"
        )
    if len(findings) > limit:
        click.echo(f"  ... and {len(findings) - limit} more (--json lists them all)")


@storage.command("verify")
@click.option("--study", "study_id", help="Only this study's files.")
@click.option("--rehash", is_flag=True, help="Also read every blob and compare its md5.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_ctx
def storage_verify(
    c: Context, study_id: str | None, rehash: bool, as_json: bool, quiet: bool
) -> None:
    """Find missing objects, missing or wrong .meta files, and (--rehash) damaged bytes."""
    cat = c.catalog
    listing, checking = _bars(quiet, len(cat.registered_files(study_id)))
    try:
        report = cat.verify_storage(
            study_id, rehash=rehash, progress=checking.update, listing_progress=listing.update
        )
    finally:
        listing.close()
        checking.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        summary = report.to_dict()
        click.echo(
            f"{report.store}: {report.checked} registered file(s) checked, "
            f"{summary['ok']} ok" + (f", {report.rehashed_bytes} bytes rehashed" if rehash else "")
        )
        for kind, n in report.counts().items():
            click.echo(f"  {n} {kind}")
        _print_findings(report.findings, 20)
        if report.unregistered:
            click.echo(
                f"note: {len(report.unregistered)} object(s) in storage are not registered "
                f"(e.g. {report.unregistered[0]})"
            )
    if not report.ok:
        raise click.exceptions.Exit(1)


@storage.command("sync")
@click.option("--study", "study_id", help="Only this study's files.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_ctx
def storage_sync(c: Context, study_id: str | None, as_json: bool, quiet: bool) -> None:
    """Upload registered files missing from storage, from the paths recorded at ingest."""
    from tqdm import tqdm

    cat = c.catalog
    listing, checking = _bars(quiet, len(cat.registered_files(study_id)))
    uploading = tqdm(desc="uploading", unit="file", disable=quiet, file=sys.stderr, leave=False)
    try:
        report = cat.sync_storage(
            study_id,
            progress=checking.update,
            listing_progress=listing.update,
            upload_progress=uploading.update,
        )
    finally:
        for bar in (listing, checking, uploading):
            bar.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(
            f"{report.store}: {report.checked} registered file(s) checked, "
            f"{len(report.uploaded)} uploaded, {len(report.failed)} failed"
        )
        _print_findings(report.failed, 20)
    if not report.ok:
        raise click.exceptions.Exit(1)


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from exc
