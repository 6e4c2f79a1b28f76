"""Registration: payloads validated in Song's order and group-committed, children first.

``submit_batch`` validates a batch against the latest committed state (later payloads of the batch
see the entities and md5s of earlier ones), then appends every table once in ``ORDER``: donors,
specimens, samples, files and sample links first, ``analyses`` last as the commit point. A crash
between those appends leaves rows no committed analysis reaches: invisible orphans, which
``repair`` deletes once they are older than any batch still committing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyarrow.compute as pc

from ..errors import AnalysisIdCollision, SonglakeError
from ..model import new_analysis_id, now, parse_payload
from ..settings import Settings
from .commit import Committer
from .registry import CompiledType
from .validation import Planner

#: the commit order of a registration: children first, the commit point last
ORDER = ["donors", "specimens", "samples", "files", "analysis_samples", "analyses"]
ORPHAN_TABLES = ORDER[:-1]


@dataclass
class SubmitItem:
    """One payload to register, with where it goes and how."""

    payload: bytes | str | dict[str, Any]
    study_id: str
    allow_duplicates: bool = False
    analysis_id: str | None = None  # a caller retrying a crashed batch passes the same id again
    source_paths: dict[str, str] | None = None


@dataclass
class SubmitResult:
    analysis_id: str | None
    error: SonglakeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Registration:
    """Submits payloads (one or a batch) and cleans up after crashed batches."""

    def __init__(self, settings: Settings, committer: Committer) -> None:
        self.settings = settings
        self.committer = committer
        self.model = committer.model

    def _planner(self) -> Planner:
        return Planner(
            self.model, self.committer.registry, enforce_latest=self.settings.enforce_latest
        )

    def _parse(self, payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
        return parse_payload(
            payload,
            max_bytes=self.settings.max_payload_bytes,
            max_depth=self.settings.max_payload_depth,
        )

    def submit_batch(
        self, items: Sequence[SubmitItem], *, actor: str | None = None
    ) -> list[SubmitResult]:
        """Validate every payload, then commit the accepted ones together (one commit per table).

        Parsing and the JSON Schema need no catalog state: they run before the writer lease is
        taken (in parallel with other writers' commits); the checks against committed state run
        under it, again from the start if another writer turns out to have committed first."""
        results: list[SubmitResult] = []
        parsed: list[dict[str, Any] | SonglakeError] = []
        checked: list[CompiledType | SonglakeError | None] = []
        prechecker = self._planner()
        for item in items:
            try:
                doc = self._parse(item.payload)
            except SonglakeError as exc:
                parsed.append(exc)
                checked.append(None)
                continue
            parsed.append(doc)
            checked.append(prechecker.precheck(doc))

        def write() -> None:
            results.clear()
            planner = self._planner()
            planner.prefetch(
                [
                    (payload, item.study_id)
                    for item, payload in zip(items, parsed, strict=True)
                    if not isinstance(payload, SonglakeError)
                ]
            )
            created = now()
            plans = []
            for item, payload, check in zip(items, parsed, checked, strict=True):
                try:
                    self.model.check_study(item.study_id)
                    if isinstance(payload, SonglakeError):
                        raise payload
                    aid = item.analysis_id or new_analysis_id()
                    if aid in self.model.analyses:
                        raise AnalysisIdCollision(analysis_id=aid)
                    plan = planner.plan(
                        payload,
                        item.study_id,
                        aid,
                        allow_duplicates=item.allow_duplicates,
                        created_at=created,
                        actor=actor,
                        source_paths=item.source_paths,
                        checked=check,
                    )
                    plans.append(plan)
                    results.append(SubmitResult(aid))
                except SonglakeError as exc:
                    results.append(SubmitResult(None, exc))
            if plans:
                self.committer.commit(
                    [(name, [r for p in plans for r in p.rows[name]]) for name in ORDER],
                    operation="submit",
                    actor=actor,
                )

        self.committer.run(write)
        return results

    def check_payload(
        self,
        payload: bytes | str | dict[str, Any],
        study_id: str,
        *,
        allow_duplicates: bool = False,
    ) -> None:
        """Validate a payload exactly as submit_batch would, committing nothing (a dry run)."""
        with self.committer.latest():
            self.model.check_study(study_id)
            doc = self._parse(payload)
            self._planner().plan(
                doc,
                study_id,
                new_analysis_id(),
                allow_duplicates=allow_duplicates,
                created_at=now(),
            )

    # -- crash leftovers ------------------------------------------------------------------------

    def orphans(self, *, min_age_seconds: float = 3600.0) -> dict[str, list[str]]:
        """Per child table, analysis ids of rows whose analysis never committed, older than
        min_age_seconds (younger ones may belong to a batch still committing elsewhere)."""
        tables = self.committer.tables
        committed = set(
            tables.read("analyses")
            .filter(pc.equal(pc.field("version"), 1))
            .column("analysis_id")
            .to_pylist()
        )
        cutoff = now() - timedelta(seconds=min_age_seconds)
        out: dict[str, list[str]] = {}
        for name in ORPHAN_TABLES:
            table = tables.read(name).select(["analysis_id", "created_at"])
            ids = {
                aid
                for aid, at in zip(
                    table.column("analysis_id").to_pylist(),
                    table.column("created_at").to_pylist(),
                    strict=True,
                )
                if aid not in committed and at <= cutoff
            }
            if ids:
                out[name] = sorted(ids)
        return out

    def repair(
        self, *, min_age_seconds: float = 3600.0, actor: str | None = None
    ) -> dict[str, int]:
        """Delete orphan rows left by a crash between the commits of a batch."""
        tables = self.committer.tables
        with self.committer.latest():
            found = self.orphans(min_age_seconds=min_age_seconds)
            deleted = {
                name: tables.delete_where_in(name, "analysis_id", ids)
                for name, ids in found.items()
            }
            if deleted:
                tables.log_commit("repair", actor, sum(deleted.values()))
        return deleted
