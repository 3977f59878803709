"""The session digest: what a session did, read from its store without disturbing it.

The names other modules use, gathered from where they live:

- `model`: the digest as frozen dataclasses (`Digest` and its parts);
- `loading`: `load`, `load_summary`, `left_running`, `iter_jobs`, reading a
  session through `store.StoreReader` (read-only, never the lock, one snapshot);
- `formats`: times, durations, dollars and commands as people read them;
- `sections`: what a report says (`state_note`, `budget_text`, ...), which
  `text` (`to_text`: a terminal page, a mail body) and `html` lay out;
- `json_form`: `to_json` and `write_json`, described by digest.schema.json.
"""

from __future__ import annotations

from .formats import (
    COMMAND_SHOWN,
    clock,
    counts_text,
    dollars,
    how_ended,
    iso,
    percent,
    shorten,
    size,
    span,
)
from .json_form import FORMAT, FORMAT_VERSION, attempt_json, job_json, to_json, write_json
from .loading import (
    check_session_dir,
    iter_jobs,
    left_running,
    load,
    load_summary,
    lock_held,
    logged_workers,
    natural_key,
)
from .model import (
    DEFAULT_LIMIT,
    JOB_STATES,
    NOT_OK_STATES,
    OUTCOMES,
    SESSION_STATES,
    TIMELINE_BARS,
    TIMELINE_COLUMNS,
    TIMELINE_MIN_COLUMNS,
    TIMELINE_ROWS,
    Attempt,
    Bar,
    Budget,
    Cost,
    Counts,
    Digest,
    DigestError,
    Instance,
    Job,
    JobLists,
    JobUse,
    Life,
    Resources,
    SessionInfo,
    Summary,
    Timeline,
    TimelineRow,
    Worker,
)
from .sections import TAIL_SHOWN, budget_text, projection_text, state_note, undestroyed
from .text import to_text

__all__ = [
    "COMMAND_SHOWN",
    "DEFAULT_LIMIT",
    "FORMAT",
    "FORMAT_VERSION",
    "JOB_STATES",
    "NOT_OK_STATES",
    "OUTCOMES",
    "SESSION_STATES",
    "TAIL_SHOWN",
    "TIMELINE_BARS",
    "TIMELINE_COLUMNS",
    "TIMELINE_MIN_COLUMNS",
    "TIMELINE_ROWS",
    "Attempt",
    "Bar",
    "Budget",
    "Cost",
    "Counts",
    "Digest",
    "DigestError",
    "Instance",
    "Job",
    "JobLists",
    "JobUse",
    "Life",
    "Resources",
    "SessionInfo",
    "Summary",
    "Timeline",
    "TimelineRow",
    "Worker",
    "attempt_json",
    "budget_text",
    "check_session_dir",
    "clock",
    "counts_text",
    "dollars",
    "how_ended",
    "iso",
    "iter_jobs",
    "job_json",
    "left_running",
    "load",
    "load_summary",
    "lock_held",
    "logged_workers",
    "natural_key",
    "percent",
    "projection_text",
    "shorten",
    "size",
    "span",
    "state_note",
    "to_json",
    "to_text",
    "undestroyed",
    "write_json",
]
