"""The analysis lifecycle: which transitions are allowed, and what each appends to history.

    UNPUBLISHED --publish--> PUBLISHED --unpublish--> UNPUBLISHED
    any state   --suppress-> SUPPRESSED

Unpublish from SUPPRESSED is refused as Song refuses it, and, unlike Song's bug #638, so is publish
from SUPPRESSED: a suppressed analysis stays withdrawn. Re-publishing and no-op transitions are
allowed and recorded, as in Song.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import StateTransitionRefused

ACTIONS = {"publish": "PUBLISHED", "unpublish": "UNPUBLISHED", "suppress": "SUPPRESSED"}

MESSAGES = {
    "publish": "AnalysisId {id} successfully published",
    "unpublish": "AnalysisId {id} successfully unpublished",
    "suppress": "AnalysisId {id} was suppressed",
}


@dataclass(frozen=True)
class Transition:
    """One requested state change."""

    study_id: str
    analysis_id: str
    action: str
    actor: str | None = None
    reason: str | None = None
    ignore_undefined_md5: bool = False


def target_state(action: str) -> str:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown lifecycle action {action!r}") from None


def check_allowed(analysis_id: str, current: str, action: str) -> str:
    """The state after `action`, or StateTransitionRefused."""
    target = target_state(action)
    if current == "SUPPRESSED" and action in ("publish", "unpublish"):
        raise StateTransitionRefused(
            f"Cannot change the analysis state for analysisId '{analysis_id}' from "
            f"'{current}' to '{target}'",
            error_id="suppressed.state.transition",
            analysis_id=analysis_id,
        )
    return target


def history_row(t: Transition, initial: str, updated: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "analysis_id": t.analysis_id,
        "study_id": t.study_id,
        "initial_state": initial,
        "updated_state": updated,
        "updated_at": at,
        "actor": t.actor,
        "reason": t.reason,
    }


def message(action: str, analysis_id: str) -> str:
    return MESSAGES[action].format(id=analysis_id)
