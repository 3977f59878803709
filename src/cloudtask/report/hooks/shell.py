"""sh: COMMAND hooks: /bin/sh -c COMMAND in the session directory, in a process
group of its own, with the session's parameters in CLOUDTASK_* variables and no
secrets; its output passed on a line at a time, split as a job's is."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from ...output import OutputLines
from ...scheduler import JobState
from .context import SECRET_VARIABLES, HookContext, error_reason, signal_problem
from .parse import ShHook

PREFIX = "CLOUDTASK_"

# After the shell exits, its output is read this much longer: a child it left in
# the background may hold the pipe open for good, and the hook is over.
DRAIN_SECONDS = 1.0
POLL_SECONDS = 0.1
READ_SIZE = 65536  # bytes of a hook's output read at a time


def session_variables(context: HookContext) -> dict[str, str]:
    """The CLOUDTASK_* variables that describe the session to an sh hook."""
    variables = {_variable(name): _text(value) for name, value in context.config.items()}
    variables[PREFIX + "SESSION_ID"] = str(context.session_id)
    variables[PREFIX + "SESSION_DIR"] = str(context.session_dir)
    variables[PREFIX + "SESSION_STATE"] = context.state
    counts = context.session.get("counts")
    if isinstance(counts, Mapping):
        numbers = {str(s): n for s, n in counts.items() if isinstance(n, int) and s != "total"}
        for state in JobState:
            variables[f"{PREFIX}JOBS_{state.upper()}"] = str(numbers.get(state.value, 0))
        variables[PREFIX + "JOBS_TOTAL"] = str(sum(numbers.values()))
    elapsed = context.session.get("elapsed")
    if isinstance(elapsed, timedelta):
        elapsed = elapsed.total_seconds()
    if isinstance(elapsed, int | float):
        variables[PREFIX + "ELAPSED"] = str(round(elapsed))
    variables.update(context.environment)
    return variables


def hook_environment(context: HookContext, base: Mapping[str, str]) -> dict[str, str]:
    """The sh hook's environment: base without any CLOUDTASK_* of its own, plus the session's.

    The controller's own CLOUDTASK_* variables are dropped whole, secrets among
    them: under that prefix the hook sees the session and nothing else.
    """
    environment = {k: v for k, v in base.items() if not k.startswith(PREFIX)}
    environment.update(session_variables(context))
    return {k: v for k, v in environment.items() if k not in SECRET_VARIABLES}


def _variable(name: str) -> str:
    name = name.strip().upper().replace("-", "_").replace(" ", "_")
    return name if name.startswith(PREFIX) else PREFIX + name


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value)
    return "" if value is None else str(value)


def run_sh(
    hook: ShHook,
    context: HookContext,
    say: Callable[[str], None],
    environ: Mapping[str, str],
    timeout: float,
) -> str | None:
    """Run the command, its output to say: None when it exits 0, else the problem."""
    if not context.session_dir.is_dir():
        return f"no session directory {context.session_dir}"
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", hook.command],
            cwd=context.session_dir,
            env=hook_environment(context, environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group, so a timeout kills whatever it started too.
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot run /bin/sh: {error_reason(exc)}"
    try:
        finished = _relay(process, say, time.monotonic() + timeout)
    finally:
        if process.returncode is None:
            _kill_group(process)
    if not finished:
        return f"timed out after {timeout:g} s"
    if process.returncode > 0:
        return f"exited {process.returncode}"
    if process.returncode < 0:
        return signal_problem(process.returncode)
    return None


def _relay(process: subprocess.Popen[bytes], say: Callable[[str], None], deadline: float) -> bool:
    """Pass the process's output on line by line until it ends; False if deadline came first."""
    assert process.stdout is not None
    lines = OutputLines(tail_lines=0)  # lines as a job's: redraws filtered, long ones cut
    stream = process.stdout
    drain_until: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if drain_until is None and process.poll() is not None:
                drain_until = now + DRAIN_SECONDS
            limit = deadline if drain_until is None else min(deadline, drain_until)
            if now >= limit:
                break
            if selector.select(min(limit - now, POLL_SECONDS)):
                chunk = os.read(stream.fileno(), READ_SIZE)
                if not chunk:
                    break
                for line in lines.feed(chunk):
                    say(line)
    for line in lines.flush():
        say(line)
    stream.close()
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
