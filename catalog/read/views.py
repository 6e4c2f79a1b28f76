"""Read-only mappings over the read model's file: ``model.analyses``, ``model.donors`` and the like.

They answer ``get``, ``[]``, ``in``, ``len`` and iteration with a query each, so code written for
dictionaries reads the file unchanged; nothing is held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .documents import Documents
from .index import from_micros
from .queries import A_COLUMNS, ENTITY_SELECT, SEARCH_COLUMNS
from .records import ROW_TYPES, AnalysisRecord

CHUNK = 10_000


def chunks(model: Documents, select: str, key: str) -> Iterator[tuple[Any, ...]]:
    """Every row of a whole-table SELECT, in key order, a query per chunk: no statement stays
    open between the rows a caller takes (an open one would pin its connection to an old state
    of the file), and a caller that stops early leaves nothing behind."""
    after = ""
    first = True
    while True:
        where = "" if first else f" WHERE {key} > ?"
        rows = model.query(
            f"{select}{where} ORDER BY {key} LIMIT {CHUNK}", () if first else (after,)
        )
        yield from rows
        if len(rows) < CHUNK:
            return
        after, first = rows[-1][0], False


class _View(Mapping[str, Any]):
    """A read-only mapping over one table of the file (``model.analyses`` and the like)."""

    def __init__(self, model: Documents) -> None:
        self.model = model

    def get(self, key: str, default: Any = None) -> Any:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class Analyses(_View):
    def get(self, key: str, default: Any = None) -> AnalysisRecord | None:
        rows = self.model.query(f"SELECT {A_COLUMNS} FROM analyses WHERE analysis_id = ?", (key,))
        return self.model.make_record(rows[0]) if rows else default

    def __contains__(self, key: object) -> bool:
        return bool(
            isinstance(key, str)
            and self.model.query("SELECT 1 FROM analyses WHERE analysis_id = ?", (key,))
        )

    def __len__(self) -> int:
        return int(self.model.query("SELECT coalesce(sum(n), 0) FROM counts")[0][0])

    def values(self) -> Iterator[AnalysisRecord]:  # type: ignore[override]
        make = self.model.make_record
        for row in chunks(self.model, f"SELECT {A_COLUMNS} FROM analyses", "analysis_id"):
            yield make(row)

    def __iter__(self) -> Iterator[str]:
        for (aid,) in chunks(self.model, "SELECT analysis_id FROM analyses", "analysis_id"):
            yield aid


class Studies(_View):
    _COLUMNS = "study_id, name, organization, description, info, created_at"

    def _row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        out = dict(zip(self._COLUMNS.split(", "), row, strict=True))
        out["created_at"] = from_micros(out["created_at"])
        return out

    def get(self, key: str, default: Any = None) -> dict[str, Any] | None:
        rows = self.model.query(
            f"SELECT {self._COLUMNS} FROM studies WHERE study_id = ? AND created_at IS NOT NULL",
            (key,),
        )
        return self._row(rows[0]) if rows else default

    def __iter__(self) -> Iterator[str]:
        rows = self.model.query("SELECT study_id FROM studies WHERE created_at IS NOT NULL")
        return iter([r[0] for r in rows])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def values(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        rows = self.model.query(f"SELECT {self._COLUMNS} FROM studies WHERE created_at IS NOT NULL")
        return iter([self._row(r) for r in rows])


class Entities(_View):
    """Donors, specimens, samples or files by id, as their named rows."""

    def __init__(self, model: Documents, name: str) -> None:
        super().__init__(model)
        self.name = name
        self.row_type = ROW_TYPES[name]
        self.key = SEARCH_COLUMNS[name][0]
        self._select = f"SELECT {ENTITY_SELECT[name]} FROM {name}"

    def get(self, key: str, default: Any = None) -> Any:
        rows = self.model.query(f"{self._select} WHERE {self.key} = ?", (key,))
        return self.row_type._make(rows[0]) if rows else default

    def __len__(self) -> int:
        return int(self.model.query(f"SELECT count(*) FROM {self.name}")[0][0])

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        make = self.row_type._make
        for row in chunks(self.model, self._select, self.key):
            yield make(row)

    def __iter__(self) -> Iterator[str]:
        for (key,) in chunks(self.model, f"SELECT {self.key} FROM {self.name}", self.key):
            yield key


class Md5s:
    """How many current files have an md5 (``model.md5s.get(md5)``)."""

    def __init__(self, model: Documents) -> None:
        self.model = model

    def get(self, md5: str, default: int = 0) -> int:
        rows = self.model.query("SELECT count(*) FROM files WHERE file_md5sum = ?", (md5,))
        return int(rows[0][0]) or default


class Links:
    """One-to-many links by id (sample -> analyses, donor -> specimens, specimen -> samples)."""

    def __init__(self, model: Documents, sql: str) -> None:
        self.model = model
        self.sql = sql  # "SELECT <target> FROM <table> WHERE <key> = ?"

    def get(self, key: str, default: Any = ()) -> list[str] | Any:
        rows = self.model.query(self.sql, (key,))
        return [r[0] for r in rows] if rows else default

    def of_all(self, keys: Iterable[str]) -> set[str]:
        """Every target linked to any of the keys, a query per 500 keys."""
        wanted = list(keys)
        base = self.sql.removesuffix(" = ?")
        out: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = tuple(wanted[i : i + 500])
            out.update(
                r[0] for r in self.model.query(f"{base} IN ({','.join('?' * len(chunk))})", chunk)
            )
        return out


class StudyIds:
    """The analysis ids of a study, sorted (``model.by_study.get(study_id, ())``)."""

    def __init__(self, model: Documents) -> None:
        self.model = model

    def get(self, study_id: str | None, default: Any = ()) -> list[str] | Any:
        code = self.model.study_code(study_id) if study_id is not None else None
        if code is None:
            return default
        rows = self.model.query(
            "SELECT analysis_id FROM by_study WHERE study = ? ORDER BY analysis_id", (code,)
        )
        return [r[0] for r in rows]
