"""--report at the end of a session: the digest, the picture, and the hook.

Runs after the session's end is stored, outside the event loop. A hook that
breaks is one warning line: the session's results and exit status stand.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import CloudtaskError
from ..paths import write_private
from ..session.directory import SessionDir
from . import digest as digests
from .hooks import HookContext, parse_hook, run_hook
from .timeline import svg

PICTURE = "timeline.svg"


def report(
    spec: str,
    session: SessionDir,
    elapsed: float,
    line: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Run the --report hook for the session that just ended."""
    try:
        hook = parse_hook(spec)
        digest = digests.load(session.path, timeline=True)
        picture = session.path / PICTURE
        write_private(picture, svg(digest))
    except (CloudtaskError, ValueError, OSError) as exc:
        warn(f"--report: cannot make the report: {exc}")
        return
    counts = {name: getattr(digest.counts, name) for name in digests.JOB_STATES}
    state = digest.session.state
    context = HookContext(
        session_id=session.id,
        session_dir=session.path,
        state=state,
        subject=(
            f"cloudtask session {session.id} {state}: {digest.counts.ok}/{digest.counts.total} OK"
        ),
        digest_text=digests.to_text(digest),
        picture=picture,
        environment={},
        session={
            "id": session.id,
            "dir": str(session.path),
            "state": state,
            "counts": counts,
            "elapsed": elapsed,
        },
        jobs=lambda: digests.iter_jobs(digest),
        config=dict(digest.config),
        job_count=lambda: digest.counts.total,  # counted by the store, no job read
    )
    problem = run_hook(hook, context, lambda text: line(f"report | {text}"))
    if problem is not None:
        warn(problem)
    else:
        line(f"report: {hook} done")
