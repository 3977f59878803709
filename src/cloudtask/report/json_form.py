"""The digest for programs: one JSON object, described by digest.schema.json.

Times are ISO 8601 UTC strings plus `*_unix` seconds. `write_json` with
`loading.iter_jobs` streams every job of a session of any size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .formats import iso
from .model import JOB_STATES, Attempt, Digest, Instance, Job, Resources, Worker

FORMAT = "cloudtask-digest"
FORMAT_VERSION = 1


def _times(name: str, when: float | None) -> dict[str, Any]:
    return {name: iso(when), f"{name}_unix": when}


def _instance_json(instance: Instance) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "provider": instance.provider,
        "size": instance.size,
        "hourly_price": instance.hourly_price,
        "address": instance.address,
        **_times("intended", instance.intended),
        **_times("launched", instance.launched),
        **_times("running", instance.running),
        **_times("destroyed", instance.destroyed),
        "not_destroyed": instance.not_destroyed,
        "note": instance.note,
        "hours": instance.hours,
        "cost": instance.cost,
    }


def _worker_json(worker: Worker) -> dict[str, Any]:
    return {
        "name": worker.name,
        "launched": worker.launched,
        "attempts": worker.attempts,
        "ok": worker.ok,
        "failed": worker.failed,
        "timeout": worker.timeout,
        "lost": worker.lost,
        "stopped": worker.stopped,
        "running": worker.running,
        "unknown_end": worker.unknown_end,
        "work_seconds": worker.work_seconds,
        **_times("first_started", worker.first_started),
        **_times("last_ended", worker.last_ended),
        "lifetime_seconds": worker.lifetime,
        "slots": worker.slots,
        "efficiency": worker.efficiency,
        "not_destroyed": worker.not_destroyed,
        "instances": [_instance_json(instance) for instance in worker.instances],
    }


def usage_json(attempt: Attempt) -> dict[str, Any]:
    """What the attempt used; null for what is not known (not measured, not ended)."""
    used = attempt.usage
    return {
        "user_cpu_seconds": None if used is None else used.user_cpu,
        "system_cpu_seconds": None if used is None else used.system_cpu,
        "max_rss_bytes": None if used is None else used.max_rss,
        "wall_seconds": attempt.duration,
        "output_bytes": None if used is None else used.output_bytes,
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "worker": attempt.worker,
        **_times("started", attempt.started),
        **_times("ended", attempt.ended),
        "duration_seconds": attempt.duration,
        "outcome": attempt.outcome,
        "exit_status": attempt.exit_status,
        "signal": attempt.signal,
        "tail": attempt.tail,
        "usage": usage_json(attempt),
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "line": job.line,
        "command": job.command,
        "state": job.state,
        "counted_attempts": job.counted_attempts,
        "attempts": [attempt_json(attempt) for attempt in job.attempts],
    }


def resources_json(used: Resources | None) -> dict[str, Any] | None:
    """What the attempts used, summed, and the jobs that used the most; None:
    nothing measured."""
    if used is None:
        return None
    return {
        "attempts_measured": used.measured,
        "cpu_measured": used.cpu_measured,
        "user_cpu_seconds": used.user_cpu,
        "system_cpu_seconds": used.system_cpu,
        "cpu_seconds": used.cpu,
        "max_rss_bytes": used.max_rss,
        "output_bytes": used.output_bytes,
        "most_cpu": [
            {"job": j.job, "cpu_seconds": j.used, "command": j.command} for j in used.most_cpu
        ],
        "most_memory": [
            {"job": j.job, "max_rss_bytes": int(j.used), "command": j.command}
            for j in used.most_memory
        ],
    }


def to_json(digest: Digest) -> dict[str, Any]:
    """The digest as one JSON-ready object (see digest.schema.json for every key)."""
    session, counts, cost, budget = digest.session, digest.counts, digest.cost, digest.budget
    listed = digest.jobs.all()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_times("generated", digest.generated),
        "session": {
            "id": session.id,
            "directory": str(session.directory),
            "state": session.state,
            "stored_state": session.stored_state,
            "live": session.live,
            **_times("started", session.started),
            **_times("ended", session.ended),
            "elapsed_seconds": session.elapsed,
            "command": session.command,
            "runs": session.runs,
            "stop_reason": session.stop_reason,
        },
        "counts": {
            "total": counts.total,
            **{state: getattr(counts, state) for state in JOB_STATES},
        },
        "config": dict(digest.config),
        "workers": [_worker_json(worker) for worker in digest.workers],
        "cost": None
        if cost is None
        else {
            "instances": cost.instances,
            "instance_hours": cost.instance_hours,
            "slot_hours": cost.slot_hours,
            "work_hours": cost.work_hours,
            "efficiency": cost.efficiency,
            "total": cost.total,
            "unpriced": cost.unpriced,
            "projected": cost.projected,
        },
        "budget": None
        if budget is None
        else {
            "dollars": budget.dollars,
            "spent": budget.spent,
            "projected": budget.projected,
            "stopped": budget.stopped,
        },
        "resources": resources_json(digest.resources),
        "jobs_listed": {
            "limit": digest.jobs.limit,
            "complete": len(listed) == counts.total,
        },
        "jobs": [job_json(job) for job in listed],
    }


def write_json(
    digest: Digest,
    out: TextIO,
    jobs: Iterable[Job] | None = None,
    *,
    flush_every: int = 1000,
) -> None:
    """Write to_json(digest) as one line of JSON (ASCII: any terminal or pipe
    takes it); with `jobs`, those are the "jobs" (every one, streamed: see
    iter_jobs) and the listing is complete."""
    data = to_json(digest)
    if jobs is None:
        json.dump(data, out)
        out.write("\n")
        return
    del data["jobs"]
    data["jobs_listed"] = {"limit": None, "complete": True}
    head = json.dumps(data)
    out.write(head[:-1] + ', "jobs": [')
    dump: Callable[[Any], str] = json.JSONEncoder().encode
    for number, job in enumerate(jobs):
        out.write((", " if number else "") + dump(job_json(job)))
        if number % flush_every == flush_every - 1:
            out.flush()
    out.write("]}\n")
