"""The shape of the house, checked from the code itself: which wing may import which, no import
cycles (imports inside functions included), modules of a readable size, and one error tree whose
every id has an HTTP status."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("songlake", "catalog", "api", "watcher")
FORBIDDEN_IN_CORE = {"flask", "werkzeug", "waitress", "watchdog", "api", "watcher", "songlake"}


def modules() -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """The modules `name` imports, anywhere in its code (functions and TYPE_CHECKING included);
    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


GRAPH = {
    name: {m for m in imports_of(name, path) if m in MODULES} for name, path in MODULES.items()
}
EXTERNAL = {name: imports_of(name, path) for name, path in MODULES.items()}


def wing(module: str) -> str:
    """The wing a module lives in: a package, or a sub-package of the core."""
    parts = module.split(".")
    if parts[0] == "catalog" and len(parts) > 2:
        return f"catalog.{parts[1]}"
    if parts[0] == "catalog" and len(parts) == 2 and (REPO / "catalog" / parts[1]).is_dir():
        return module
    return parts[0] if parts[0] != "catalog" else "catalog"


# who may import whom, from the top down (a wing imports only wings below it)
ALLOWED = {
    "songlake": {
        "songlake",
        "api",
        "watcher",
        "catalog",
        "catalog.events",
        "catalog.write",
        "catalog.read",
        "catalog.store",
    },
    "api": {"api", "catalog", "catalog.events", "catalog.write", "catalog.read", "catalog.store"},
    "watcher": {"watcher", "catalog", "catalog.write", "catalog.read", "catalog.store"},
    # events read the read model's row types to rewind an analysis to a change (asof.py)
    "catalog.events": {"catalog.events", "catalog", "catalog.read", "catalog.store"},
    "catalog": {"catalog", "catalog.write", "catalog.read", "catalog.store"},
    "catalog.write": {"catalog.write", "catalog", "catalog.read", "catalog.store"},
    "catalog.read": {"catalog.read", "catalog"},
    "catalog.store": {"catalog.store", "catalog"},
}
# the core's own modules that its wings may use; the facade (catalog.catalog) and the package face
# are for the wings above (events reads the catalog through the facade, as the API does)
CORE_BASE = {
    "catalog.errors",
    "catalog.settings",
    "catalog.model",
    "catalog.tables",
    "catalog.sql",
    "catalog.root",
}
FACADE_USERS = {"catalog.events"}


def test_importing_the_core_loads_no_web_server_watcher_or_application() -> None:
    """The issue's own check, then the whole core imported: nothing above it comes along."""
    core = sorted(m for m in MODULES if m.split(".")[0] == "catalog")
    code = (
        "import sys, importlib\n"
        "import catalog\n"
        f"above = {sorted(FORBIDDEN_IN_CORE)}\n"
        "first = sorted(m for m in sys.modules if m.split('.')[0] in above)\n"
        f"for m in {core}: importlib.import_module(m)\n"
        "from catalog import Catalog, SubmitItem, Transition\n"
        "every = sorted(m for m in sys.modules if m.split('.')[0] in above)\n"
        "print(first, every)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[] []"


def test_the_core_never_names_what_sits_above_it() -> None:
    offending = {
        name: sorted(m for m in EXTERNAL[name] if m.split(".")[0] in FORBIDDEN_IN_CORE)
        for name in MODULES
        if name.split(".")[0] == "catalog"
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_every_import_runs_down_the_wings() -> None:
    upward = []
    for name, targets in GRAPH.items():
        for target in targets:
            allowed = ALLOWED[wing(name)]
            if wing(target) not in allowed:
                upward.append(f"{name} -> {target}")
            # the wings of the core use its base modules, never the facade or the package face
            elif wing(name).startswith("catalog.") and wing(target) == "catalog":
                if target not in CORE_BASE and not (
                    wing(name) in FACADE_USERS and target == "catalog.catalog"
                ):
                    upward.append(f"{name} -> {target}")
    assert upward == []


def test_api_and_watcher_never_import_each_other_and_nothing_imports_songlake() -> None:
    crossing = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if (wing(name), wing(target)) in {("api", "watcher"), ("watcher", "api")}
        or (wing(target) == "songlake" and wing(name) != "songlake")
    ]
    assert crossing == []


def test_no_import_cycles_between_modules() -> None:
    """Tarjan's strongly connected components over every import, those inside functions too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in GRAPH[node]:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The walker is not blind to the old trick of importing inside a function."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from catalog.store import s3\n    return s3\n")
    assert "catalog.store.s3" in imports_of("catalog.store.local", path)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("catalog")))
def test_core_modules_stay_readable(name: str) -> None:
    """About 600 lines at most; the S3 backend may run longer, being one concept."""
    limit = 900 if name == "catalog.store.s3" else 620
    assert len(MODULES[name].read_text().splitlines()) <= limit


def test_every_error_class_lives_in_the_one_tree() -> None:
    """Exceptions are defined in catalog/errors.py; the API's AuthError family may live beside
    the auth code as long as it derives from the tree. (OSError subclasses are transport signals
    inside a sink; click's exception is how the CLI prints an error of the tree.)"""
    import importlib

    import click

    from catalog.errors import SonglakeError

    elsewhere = []
    for name in MODULES:
        if name.endswith("__main__"):
            continue  # running it is its job
        module = importlib.import_module(name)
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, BaseException)):
                continue
            if value.__module__ != name or name == "catalog.errors":
                continue
            if issubclass(value, SonglakeError) and name == "api.auth":
                continue
            if issubclass(value, (OSError, click.ClickException)):
                continue
            elsewhere.append(f"{name}.{value.__name__}")
    assert elsewhere == []


def error_ids_in_code() -> set[str]:
    """Every error id the code can raise: the tree's class ids (and id tables), and any id still
    given as a literal ``error_id=`` anywhere."""
    import api.auth  # noqa: F401  (AuthError and its ids join the tree)
    from catalog import errors

    found: set[str] = set()
    pending = [errors.SonglakeError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.add(cls.error_id)
        found.update(getattr(cls, "IDS", {}).values())
    classes = {c.__name__ for c in _tree(errors.SonglakeError)}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            if ast.unparse(node.func).split(".")[-1] not in classes:
                continue
            for kw in node.keywords:
                if kw.arg != "error_id":
                    continue
                if isinstance(kw.value, ast.Constant):
                    found.add(kw.value.value)
                else:  # only an id taken from another error, or the tree's own id tables
                    text = ast.unparse(kw.value)
                    assert text.endswith(".error_id") or text.startswith("self.IDS["), (name, text)
    return found


def _tree(root: type) -> list[type]:
    out, pending = [], [root]
    while pending:
        cls = pending.pop()
        out.append(cls)
        pending.extend(cls.__subclasses__())
    return out


def test_every_error_id_has_its_http_status_in_the_one_table() -> None:
    from api.errors import STATUS

    missing = sorted(i for i in error_ids_in_code() if i not in STATUS)
    assert missing == []


def test_the_id_table_check_would_see_a_missing_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from api import errors as api_errors

    monkeypatch.delitem(api_errors.STATUS, "watcher.already.running")
    assert "watcher.already.running" in error_ids_in_code() - set(api_errors.STATUS)
