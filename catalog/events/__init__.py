"""Song's analysis messages, from the committed history to every configured sink.

    outbox      the committed history of ``analyses`` and ``analysis_state_history``, read by
                Delta version as an ordered stream of changes (nothing extra is written)
    asof        an analysis as it was at a change: the data, history and files committed up to it
    messages    each change as Song's message ``{analysisId, studyId, state, action,
                songServerId, analysis}``; the live stream behind ``GET /events``
    dispatcher  one per root: a worker thread per sink, cursors, ``events status`` and ``replay``
    config      the ``[events]`` table of songlake.toml, and opening the sink a spec names
    sink        the Sink interface, SinkSpec, Record, retries
    jsonl       the embedded default sink; webhook and kafka the other two

The events wing reads the catalog through its facade (``catalog.catalog``); the facade never
imports it.
"""

from .dispatcher import (
    Dispatcher,
    dispatcher_running,
    holder,
    replay_folder,
    request_replay,
    rewind_saved,
    start_background,
    status,
)

__all__ = [
    "Dispatcher",
    "dispatcher_running",
    "holder",
    "replay_folder",
    "request_replay",
    "rewind_saved",
    "start_background",
    "status",
]
