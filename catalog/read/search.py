"""Portal search: analyses and files filtered, sorted and paged, beyond Song's id search.

Filters (all optional, combined with AND; each list matches any of its values): study, analysis
state, analysis type (``name`` or ``name:version``), analysis id, donor / specimen / sample ids and
submitter ids, file objectId, file type, data type, file access, creation and update time.
Analyses match a file filter when one of their files does. Sort by id, createdAt or updatedAt,
ascending or descending; ``limit``/``offset`` paging with the total count.

The index is columnar: one compact array per attribute (``array`` module: 1-2 bytes per code),
with a row per analysis and a row per file, filtered with Arrow compute kernels, so a query at a
million analyses costs milliseconds rather than a Python loop. It follows the read model through
its listeners: every applied row marks its analysis or file dirty, and the next query re-reads
just those. Built on first use from the read model (a few seconds at a million analyses).

Sorting by id uses the first 8 bytes of the id as an unsigned integer (same order as the strings
for those bytes); ties on that key are broken by the full id on the page's boundary only.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MalformedParameter
from ..model import STATES, entity_id
from .readmodel import ReadModel
from .records import AnalysisRecord, FileRow

STATE_CODE = {s: i for i, s in enumerate(STATES)}
ANALYSIS_SORTS = {"analysisId": "a_key", "createdAt": "a_created", "updatedAt": "a_updated"}
FILE_SORTS = {"objectId": "f_key", "fileName": None, "fileSize": "f_size"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: pages ending at most this far in are selected rather than sorted (a heap of k rows beats a
#: full sort only while k is small; deep pages sort)
SELECT_MAX = 5_000


def sort_key(value: str) -> int:
    """The first 8 UTF-8 bytes as a big-endian integer: ordered like the strings themselves."""
    return int.from_bytes(value.encode("utf-8")[:8].ljust(8, b"\0"), "big")


def micros(value: datetime) -> int:
    """Microseconds since the epoch (a naive time is taken as local time)."""
    if value.tzinfo is None:
        value = value.astimezone()
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Filters:
    """What a portal asks for; empty tuples and None mean "any"."""

    study_ids: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    analysis_types: tuple[str, ...] = ()
    analysis_ids: tuple[str, ...] = ()
    donor_ids: tuple[str, ...] = ()
    specimen_ids: tuple[str, ...] = ()
    sample_ids: tuple[str, ...] = ()
    submitter_donor_ids: tuple[str, ...] = ()
    submitter_specimen_ids: tuple[str, ...] = ()
    submitter_sample_ids: tuple[str, ...] = ()
    object_ids: tuple[str, ...] = ()
    file_types: tuple[str, ...] = ()
    data_types: tuple[str, ...] = ()
    file_access: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.states if s not in STATE_CODE]
        if bad:
            raise MalformedParameter(
                f"The following are not AnalysisStates: '{','.join(bad)}'",
            )
        bad = [a for a in self.file_access if a not in ("open", "controlled")]
        if bad:
            raise MalformedParameter(
                f"fileAccess must be open or controlled, not '{','.join(bad)}'",
            )
        for name in ("analysis_types",):
            for item in getattr(self, name):
                _, _, version = item.partition(":")
                if version and not version.isdigit():
                    raise MalformedParameter(
                        f"An analysis type is 'name' or 'name:version', not '{item}'",
                    )


FILTER_NAMES = tuple(f.name for f in fields(Filters))


@dataclass
class Page:
    ids: list[str]
    total: int


class _Codes:
    """Strings <-> small integer codes (study ids, types, data types...)."""

    def __init__(self) -> None:
        self.code: dict[str | None, int] = {None: 0}
        self.names: list[str | None] = [None]

    def __call__(self, value: str | None) -> int:
        code = self.code.get(value)
        if code is None:
            code = self.code[value] = len(self.names)
            self.names.append(value)
        return code

    def lookup(self, values: Iterable[str]) -> list[int]:
        return [self.code[v] for v in values if v in self.code]


class _Column:
    """A mutable typed column with a cached Arrow copy."""

    def __init__(self, typecode: str, arrow_type: pa.DataType) -> None:
        self.data = array(typecode)
        self.type = arrow_type
        self._arrow: pa.Array | None = None

    def append(self, value: int) -> None:
        self.data.append(value)
        self._arrow = None

    def __setitem__(self, index: int, value: int) -> None:
        if self.data[index] != value:
            self.data[index] = value
            self._arrow = None

    def arrow(self) -> pa.Array:
        if self._arrow is None or len(self._arrow) != len(self.data):
            buffer = pa.py_buffer(self.data.tobytes())  # a copy: the array may grow later
            self._arrow = pa.Array.from_buffers(self.type, len(self.data), [None, buffer])
        return self._arrow


class SearchIndex:
    """Columnar filters over the read model's analyses and files."""

    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._built = False
        self._dirty_analyses: set[str] = set()
        self._dirty_files: set[str] = set()
        self.studies = _Codes()
        self.types = _Codes()
        self.file_types = _Codes()
        self.data_types = _Codes()
        self.a_ids: list[str] = []
        self.a_row: dict[str, int] = {}
        self.a_key = _Column("Q", pa.uint64())
        self.a_study = _Column("H", pa.uint16())
        self.a_state = _Column("B", pa.uint8())
        self.a_type = _Column("H", pa.uint16())
        self.a_version = _Column("i", pa.int32())
        self.a_created = _Column("q", pa.int64())
        self.a_updated = _Column("q", pa.int64())
        self.f_ids: list[str] = []
        self.f_row: dict[str, int] = {}
        self.f_key = _Column("Q", pa.uint64())
        self.f_analysis = _Column("I", pa.uint32())
        self.f_type = _Column("H", pa.uint16())
        self.f_data_type = _Column("H", pa.uint16())
        self.f_access = _Column("B", pa.uint8())
        self.f_alive = _Column("B", pa.uint8())
        self.f_size = _Column("q", pa.int64())
        model.listeners.append(self._on_row)

    def close(self) -> None:
        if self._on_row in self.model.listeners:
            self.model.listeners.remove(self._on_row)

    # -- following the read model (listeners run under the model's lock) -------------------------

    def _on_row(self, table: str, row: dict[str, Any]) -> None:
        if table in ("analyses", "analysis_state_history"):
            self._dirty_analyses.add(row["analysis_id"])
        elif table == "files":
            self._dirty_analyses.add(row["analysis_id"])
            self._dirty_files.add(row["object_id"])

    def _build(self) -> None:
        m = self.model
        with m.lock:
            records = list(m.analyses.values())
            files = list(m.files.values())
        for rec in records:
            self._put_analysis(rec)
        for f in files:
            self._put_file(f)
        self._built = True

    def _sync(self) -> None:
        """Bring the columns up to date; call with self._lock held."""
        if not self._built:
            self._build()
        m = self.model
        with m.lock:
            dirty_a, self._dirty_analyses = self._dirty_analyses, set()
            dirty_f, self._dirty_files = self._dirty_files, set()
            for aid in dirty_a:
                rec = m.analyses.get(aid)
                if rec is not None:
                    self._put_analysis(rec)
            for oid in dirty_f:
                f = m.files.get(oid)
                if f is not None:
                    self._put_file(f)
                elif oid in self.f_row:
                    self.f_alive[self.f_row[oid]] = 0

    def _put_analysis(self, rec: AnalysisRecord) -> int:
        row = self.a_row.get(rec.analysis_id)
        state = STATE_CODE[rec.state]
        atype = self.types(rec.type_name)
        updated = micros(rec.updated_at)
        if row is None:
            row = self.a_row[rec.analysis_id] = len(self.a_ids)
            self.a_ids.append(rec.analysis_id)
            self.a_key.append(sort_key(rec.analysis_id))
            self.a_study.append(self.studies(rec.study_id))
            self.a_state.append(state)
            self.a_type.append(atype)
            self.a_version.append(rec.type_version)
            self.a_created.append(micros(rec.created_at))
            self.a_updated.append(updated)
        else:
            self.a_state[row] = state
            self.a_type[row] = atype
            self.a_version[row] = rec.type_version
            self.a_updated[row] = updated
        return row

    def _put_file(self, f: FileRow) -> None:
        arow = self.a_row.get(f.analysis_id)
        if arow is None:
            rec = self.model.analyses.get(f.analysis_id)
            if rec is None:
                return
            arow = self._put_analysis(rec)
        row = self.f_row.get(f.object_id)
        if row is None:
            self.f_row[f.object_id] = len(self.f_ids)
            self.f_ids.append(f.object_id)
            self.f_key.append(sort_key(f.object_id))
            self.f_analysis.append(arow)
            self.f_type.append(self.file_types(f.file_type))
            self.f_data_type.append(self.data_types(f.data_type))
            self.f_access.append(1 if f.file_access == "controlled" else 0)
            self.f_alive.append(1)
            self.f_size.append(f.file_size or 0)
        else:
            self.f_type[row] = self.file_types(f.file_type)
            self.f_data_type[row] = self.data_types(f.data_type)
            self.f_access[row] = 1 if f.file_access == "controlled" else 0
            self.f_alive[row] = 1
            self.f_size[row] = f.file_size or 0

    # -- queries --------------------------------------------------------------------------------

    def analyses(
        self,
        filters: Filters,
        *,
        sort: str = "analysisId",
        descending: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        """Analysis ids matching `filters`, one page of them in order, and the total."""
        if sort not in ANALYSIS_SORTS:
            raise MalformedParameter(
                f"sort must be one of {', '.join(ANALYSIS_SORTS)}, not '{sort}'",
            )
        with self._lock:
            self._sync()
            rows = self._analysis_rows(filters)
            if rows is None:
                return Page([], 0)
            keys = [self.a_key.arrow()]
            if sort != "analysisId":
                keys.insert(0, getattr(self, ANALYSIS_SORTS[sort]).arrow())
            page = _page(rows, keys, self.a_ids, descending, offset, limit)
            return Page([self.a_ids[r] for r in page], len(rows))

    def summary(self, since: datetime) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """Analyses per study and state, and per day since `since` (UTC): how many were created,
        and how many had their latest state change, that day."""
        day = 86_400_000_000
        with self._lock:
            self._sync()
            study, state = self.a_study.arrow(), self.a_state.arrow()
            created, updated = self.a_created.arrow(), self.a_updated.arrow()
            names = list(self.studies.names)
        counts: dict[str, dict[str, int]] = {}
        groups = pa.table({"study": study, "state": state}).group_by(["study", "state"])
        for row in groups.aggregate([([], "count_all")]).to_pylist():
            per = counts.setdefault(str(names[row["study"]]), dict.fromkeys(STATES, 0))
            per[STATES[row["state"]]] = row["count_all"]
        start = micros(since) // day
        per_day = {start + i: [0, 0] for i in range((micros(datetime.now(UTC)) // day) - start + 1)}
        changed = pc.and_(pc.greater_equal(updated, start * day), pc.not_equal(updated, created))
        for column, mask, slot in (
            (created, pc.greater_equal(created, start * day), 0),
            (updated, changed, 1),
        ):
            days = pc.divide(pc.filter(column, mask), day)
            for item in pc.value_counts(days).to_pylist():
                if item["values"] in per_day:
                    per_day[item["values"]][slot] = item["counts"]
        return dict(sorted(counts.items())), [
            {
                "day": (_EPOCH + timedelta(days=d)).date().isoformat(),
                "registered": n[0],
                "changed": n[1],
            }
            for d, n in sorted(per_day.items())
        ]

    def files(
        self,
        filters: Filters,
        *,
        sort: str = "objectId",
        descending: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        """File objectIds matching `filters` (analysis filters apply to each file's analysis)."""
        if sort not in ("objectId", "fileSize"):
            raise MalformedParameter(f"sort must be objectId or fileSize, not '{sort}'")
        with self._lock:
            self._sync()
            rows = self._file_rows(filters)
            if rows is None:
                return Page([], 0)
            keys = [self.f_key.arrow()]
            if sort == "fileSize":
                keys.insert(0, self.f_size.arrow())
            page = _page(rows, keys, self.f_ids, descending, offset, limit)
            return Page([self.f_ids[r] for r in page], len(rows))

    # -- filtering ------------------------------------------------------------------------------

    def _analysis_conditions(self, f: Filters, take: pa.Array | None) -> list[pa.Array] | None:
        """Boolean arrays over analysis rows (or over the rows in `take`); None: nothing matches."""

        def col(c: _Column) -> pa.Array:
            a = c.arrow()
            return a if take is None else pc.take(a, take)

        conds: list[pa.Array] = []
        if f.study_ids:
            codes = self.studies.lookup(f.study_ids)
            if not codes:
                return None
            conds.append(pc.is_in(col(self.a_study), pa.array(codes, pa.uint16())))
        if f.states:
            codes = [STATE_CODE[s] for s in f.states]
            if len(codes) < len(STATE_CODE):
                conds.append(pc.is_in(col(self.a_state), pa.array(codes, pa.uint8())))
        if f.analysis_types:
            type_conds = []
            for item in f.analysis_types:
                name, _, version = item.partition(":")
                if name not in self.types.code:
                    continue
                cond = pc.equal(col(self.a_type), self.types.code[name])
                if version:
                    cond = pc.and_(cond, pc.equal(col(self.a_version), int(version)))
                type_conds.append(cond)
            if not type_conds:
                return None
            any_type = type_conds[0]
            for cond in type_conds[1:]:
                any_type = pc.or_(any_type, cond)
            conds.append(any_type)
        for column, after, before in (
            (self.a_created, f.created_after, f.created_before),
            (self.a_updated, f.updated_after, f.updated_before),
        ):
            if after is not None:
                conds.append(pc.greater_equal(col(column), micros(after)))
            if before is not None:
                conds.append(pc.less(col(column), micros(before)))
        return conds

    def _entity_analysis_rows(self, f: Filters) -> set[int] | None:
        """Analysis rows linked to the donors / specimens / samples asked for; None: no filter."""
        m = self.model
        studies = list(f.study_ids) or list(m.studies)
        wanted: list[set[str]] = []  # sample ids per kind of filter

        def by_submitter(values: Sequence[str]) -> list[str]:
            return [entity_id(s, v) for s in studies for v in values]

        with m.lock:
            donors = list(f.donor_ids) + by_submitter(f.submitter_donor_ids)
            specimens = list(f.specimen_ids) + by_submitter(f.submitter_specimen_ids)
            samples = list(f.sample_ids) + by_submitter(f.submitter_sample_ids)
            if f.donor_ids or f.submitter_donor_ids:
                wanted.append(
                    {
                        s
                        for d in donors
                        for p in m.donor_specimens.get(d, ())
                        for s in m.specimen_samples.get(p, ())
                    }
                )
            if f.specimen_ids or f.submitter_specimen_ids:
                wanted.append({s for p in specimens for s in m.specimen_samples.get(p, ())})
            if f.sample_ids or f.submitter_sample_ids:
                wanted.append({s for s in samples if s in m.samples})
            if not wanted:
                return None
            out: set[int] | None = None
            for sample_set in wanted:
                rows = {
                    self.a_row[a]
                    for s in sample_set
                    for a in m.sample_analyses.get(s, ())
                    if a in self.a_row
                }
                out = rows if out is None else out & rows
            return out or set()

    def _file_conditions(self, f: Filters, take: pa.Array | None = None) -> list[pa.Array] | None:
        def col(c: _Column) -> pa.Array:
            a = c.arrow()
            return a if take is None else pc.take(a, take)

        conds = [pc.equal(col(self.f_alive), 1)]
        for values, codes_of, column in (
            (f.file_types, self.file_types, self.f_type),
            (f.data_types, self.data_types, self.f_data_type),
        ):
            if values:
                codes = codes_of.lookup(values)
                if not codes:
                    return None
                conds.append(pc.is_in(col(column), pa.array(codes, pa.uint16())))
        if f.file_access and len(set(f.file_access)) == 1:
            conds.append(pc.equal(col(self.f_access), 1 if f.file_access[0] == "controlled" else 0))
        return conds

    def _file_filtered(self, f: Filters) -> bool:
        return bool(f.object_ids or f.file_types or f.data_types or f.file_access)

    def _analysis_rows(self, f: Filters) -> pa.Array | None:
        conds = self._analysis_conditions(f, None)
        if conds is None:
            return None
        rows = _indices(conds, len(self.a_ids))
        if f.analysis_ids:
            wanted = [self.a_row[a] for a in f.analysis_ids if a in self.a_row]
            rows = pc.filter(rows, pc.is_in(rows, pa.array(wanted, pa.uint64())))
        linked = self._entity_analysis_rows(f)
        if linked is not None:
            rows = pc.filter(rows, pc.is_in(rows, pa.array(sorted(linked), pa.uint64())))
        if self._file_filtered(f):
            frows = self._file_rows(Filters(**_file_part(f)))
            if frows is None:
                return None
            arows = pc.unique(pc.take(self.f_analysis.arrow(), frows)).cast(pa.uint64())
            rows = pc.filter(rows, pc.is_in(rows, arows))
        return rows

    def _file_rows(self, f: Filters) -> pa.Array | None:
        conds = self._file_conditions(f)
        if conds is None:
            return None
        rows = _indices(conds, len(self.f_ids))
        if f.object_ids:
            wanted = [self.f_row[o] for o in f.object_ids if o in self.f_row]
            rows = pc.filter(rows, pc.is_in(rows, pa.array(wanted, pa.uint64())))
        analysis_part = Filters(**_analysis_part(f))
        if analysis_part != Filters():
            arows_of_files = pc.take(self.f_analysis.arrow(), rows)
            aconds = self._analysis_conditions(analysis_part, arows_of_files)
            if aconds is None:
                return None
            if aconds:
                rows = pc.filter(rows, _and(aconds))
                arows_of_files = pc.take(self.f_analysis.arrow(), rows)
            extra: list[int] | None = None
            if analysis_part.analysis_ids:
                extra = [self.a_row[a] for a in analysis_part.analysis_ids if a in self.a_row]
            linked = self._entity_analysis_rows(analysis_part)
            if linked is not None:
                extra = sorted(linked if extra is None else linked & set(extra))
            if extra is not None:
                keep = pc.is_in(arows_of_files, pa.array(extra, pa.uint32()))
                rows = pc.filter(rows, keep)
        return rows


_FILE_FIELDS = ("object_ids", "file_types", "data_types", "file_access")


def _file_part(f: Filters) -> dict[str, Any]:
    return {name: getattr(f, name) for name in _FILE_FIELDS}


def _analysis_part(f: Filters) -> dict[str, Any]:
    return {name: getattr(f, name) for name in FILTER_NAMES if name not in _FILE_FIELDS}


def _and(conds: list[pa.Array]) -> pa.Array:
    out = conds[0]
    for cond in conds[1:]:
        out = pc.and_(out, cond)
    return out


def _indices(conds: list[pa.Array], n: int) -> pa.Array:
    if not conds:  # every row: made by Arrow (a million Python ints take ~60 ms)
        return pc.indices_nonzero(pc.fill_null(pa.nulls(n, pa.bool_()), True))
    return pc.indices_nonzero(_and(conds))


def _page(
    rows: pa.Array,
    keys: list[pa.Array],
    ids: list[str],
    descending: bool,
    offset: int,
    limit: int,
) -> list[int]:
    """Rows sorted by the numeric keys then the full id, sliced [offset, offset + limit)."""
    total = len(rows)
    if offset >= total or limit <= 0:
        return []
    order = "descending" if descending else "ascending"
    sort_keys = [(f"k{i}", order) for i in range(len(keys))]
    taken = [pc.take(k, rows) for k in keys]
    table = pa.table({f"k{i}": k for i, k in enumerate(taken)})
    if offset + limit <= SELECT_MAX and (offset + limit) * 8 < total:
        # an early page: the rows before its end are the first offset + limit in order plus the
        # ties of the last of them, so select those (a heap of k) rather than sort every row
        top = pc.select_k_unstable(table, k=offset + limit, sort_keys=sort_keys)
        chosen = table.take(top)
        edge = pc.sort_indices(chosen, sort_keys=sort_keys)[-1].as_py()
        ties = _and([pc.equal(k, chosen.column(i)[edge]) for i, k in enumerate(taken)])
        subset = pc.unique(pa.chunked_array([top, pc.indices_nonzero(ties)]).combine_chunks())
        rows, total = pc.take(rows, subset), len(subset)
        taken = [pc.take(k, subset) for k in taken]
        table = pa.table({f"k{i}": k for i, k in enumerate(taken)})
    sorted_idx = pc.sort_indices(table, sort_keys=sort_keys)
    lo, hi = offset, min(total, offset + limit)

    def tuple_at(position: int) -> tuple[int, ...]:
        index = sorted_idx[position].as_py()
        return tuple(k[index].as_py() for k in taken)

    # widen the window over equal numeric keys, so ties are ordered by the full id
    first, last = tuple_at(lo), tuple_at(hi - 1)
    while lo > 0 and tuple_at(lo - 1) == first:
        lo -= 1
    while hi < total and tuple_at(hi) == last:
        hi += 1
    idx = sorted_idx.slice(lo, hi - lo)
    window_rows = pc.take(rows, idx).to_pylist()
    window_keys = [pc.take(k, idx).to_pylist() for k in taken]
    items = sorted(
        zip(zip(*window_keys, strict=True), window_rows, strict=True),
        key=lambda item: (item[0], ids[item[1]]),
        reverse=descending,
    )
    start = offset - lo
    return [row for _, row in items[start : start + limit]]
