"""The contract every case must keep: exit status 0, 1 or 2 (0 or 2 for the
logalyzer), no Python traceback, on exit 2 a one-line error naming the program,
no half-made session, nothing a session had recorded lost; for job input, the
README's rules (the line an error names, every stored job command)."""

from __future__ import annotations

import json
import re
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.cases import Case
from tests.fuzz.sandbox import Result, StoreSummary
from tests.fuzz.values import GRACE, MAX_ARG_STRLEN, dec, enc

from cloudtask.cli.logalyzer import parse_args as logalyzer_parse_args
from cloudtask.cli.main import parse_argv
from cloudtask.config import BY_ATTR, OPTIONS
from cloudtask.errors import CloudtaskError


@dataclass(frozen=True)
class Failure:
    area: str
    kind: str
    detail: str
    case: Case
    note: bool = False  # an observation, not a broken promise

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.area, self.kind, normalized(self.detail))


def normalized(detail: str) -> str:
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", detail)
    text = re.sub(r"/tmp/\S+", "PATH", text)
    return re.sub(r"\d+", "N", text)[:90]


TRACEBACK = b"Traceback (most recent call last)"


def traceback_summary(text: bytes) -> str:
    lines = dec(text).splitlines()
    start = max((i for i, line in enumerate(lines) if "Traceback (most" in line), default=0)
    frames = [line.strip() for line in lines[start:] if line.strip().startswith('File "')]
    where = ""
    if frames:
        match = re.match(r'File "([^"]+)", line \d+, in (\S+)', frames[-1])
        if match:
            where = f"{Path(match[1]).name}:{match[2]}: "
    tail = [line for line in lines[start:] if line and not line.startswith(" ")]
    return where + (tail[-1] if tail else "?")


def check(case: Case, result: Result) -> list[Failure]:
    """The contract's promises that this run broke."""
    failures: list[Failure] = []

    def fail(kind: str, detail: str, *, note: bool = False) -> None:
        failures.append(Failure(case.area, kind, detail, case, note))

    status = result.status
    allowed = {0, 2} if case.program == "logalyzer" else {0, 1, 2}
    tracebacks = [traceback_summary(s) for s in (result.stdout, result.stderr) if TRACEBACK in s]
    for summary in tracebacks:
        fail("traceback", f"{summary} (exit {status})")
    if result.hung:
        fail("hang", f"still running {GRACE * 1.5:.0f} s after SIGTERM, and SIGTERM again")
    elif result.slow_abort:
        fail(
            "slow-abort",
            f"still running {GRACE:.0f} s after SIGTERM; a second SIGTERM: exit {status}",
            note=True,
        )
    elif result.timed_out:
        if case.program == "logalyzer":
            fail("slow", "the logalyzer ran past the case's time limit")
        elif status not in (0, 1, 2, -signal.SIGTERM) and not tracebacks:
            fail("exit-status", f"exit status {status} after SIGTERM")
    elif status not in allowed and not tracebacks:
        fail("exit-status", f"exit status {status}")
    if status == 2 and not result.timed_out:
        problem = error_format(result.stderr, case.prog)
        if problem:
            fail("error-format", problem)
        first = dec(result.stderr).split("\n")[0]
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", first):
            fail("control-characters", f"the error shows them raw: {first[:100]!r}", note=True)
        where = error_names(case)
        if not problem and where and not any(name in first for name in where):
            fail("where", f"names none of {', '.join(where)}: {first[:100]!r}", note=True)
    if not result.timed_out:
        for path in result.incomplete:
            fail("half-made-session", f"{path} has no complete store (exit {status})")
        if status == 2 and result.new_sessions and not result.incomplete:
            fail("exit-2-kept-session", f"exit 2 left {', '.join(result.new_sessions)}", note=True)
    for number, before in result.before.items():
        lost = lost_records(before, result.after.get(number), status)
        if lost:
            fail("lost-records", f"session {number}: {lost}")
    if case.area == "input" and not result.timed_out and not failures:
        problem = input_problem(case, result)
        if problem:
            fail(*problem)
    if case.program == "logalyzer" and status == 0 and not result.timed_out:
        problem = logalyzer_output_problem(case, result)
        if problem:
            fail("logalyzer-output", problem)
    if case.area == "workers" and status == 0 and not result.timed_out and case.stdin:
        try:
            parsed = parse_argv([dec(arg) for arg in case.argv])
        except CloudtaskError:
            parsed = None
        if parsed is not None and not (parsed.help or parsed.version):
            fail("workers-ok", "exit 0 although no --workers address can be reached")
    return failures


def error_names(case: Case) -> list[str]:
    """For a case that sets one option (nothing else can be wrong): the names its error
    should give, the setting's own and the option's flag."""
    if case.area == "options-env" and case.argv == (b"true",) and case.stdin.startswith(b"1"):
        options = [option for option in OPTIONS if option.env in dict(case.env)]
        if len(case.env) == 1 and len(options) == 1:
            return [options[0].env, options[0].flag_name]
    template = case.template
    if (
        case.area == "options-template"
        and template is not None
        and len(template.values()) == 1
        and template.command == '"true"'
        and case.argv == ()
        and case.stdin.startswith(b"1")
    ):
        attr = template.values()[0][0]
        option = BY_ATTR.get(attr)
        return [attr] if option is None else [attr, option.flag_name]
    return []


def error_format(stderr: bytes, prog: str) -> str | None:
    lines = dec(stderr).removesuffix("\n").split("\n")
    if lines == [""]:
        lines = []
    if not lines:
        return "exit 2 with nothing on stderr"
    if not lines[0].startswith(prog + ": ") or not lines[0][len(prog) + 2 :].strip():
        return f"first line is not '{prog}: ERROR': {lines[0][:120]!r}"
    extra = [line for line in lines[1:] if not line.startswith("usage:")]
    if extra:
        return f"{len(lines)} lines: {lines[0][:80]!r} then {extra[0][:80]!r}"
    return None


def lost_records(before: StoreSummary | None, after: StoreSummary | None, status: int) -> str:
    if before is None:
        return ""
    if after is None:
        return "its store cannot be read any more"
    if len(after.states) != len(before.states):
        return f"{len(before.states)} jobs became {len(after.states)}"
    if after.attempts < before.attempts:
        return f"{before.attempts} attempts became {after.attempts}"
    if after.command != before.command:
        return f"its command {before.command!r} became {after.command!r}"
    was = dict(before.states)
    for job, state in after.states:
        if was.get(job) == "ok" and state != "ok":
            return f"job {job} was ok, now {state}"
    if status == 2 and after.states != before.states:
        changed = [(j, was.get(j), s) for j, s in after.states if was.get(j) != s]
        job, old, new = changed[0]
        return f"a refused run (exit 2) changed job states: job {job} {old} -> {new}"
    return ""


# The README: a command longer than this once quoted is refused with its line.
LONGEST_COMMAND = 126_976


def expected_jobs(stdin: bytes) -> tuple[int | None, list[list[str]]]:
    """By the README: (the line refused first, or None; the words of each job)."""
    jobs: list[list[str]] = []
    lines = stdin.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        raw = raw.removesuffix(b"\r")
        if b"\0" in raw:
            return number, jobs
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return number, jobs
        stripped = text.lstrip(" \t\r\n")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = shlex.split(text)
        except ValueError:
            return number, jobs
        if len(shlex.quote(job_command(words)).encode()) > LONGEST_COMMAND:
            return number, jobs
        jobs.append(words)
    return None, jobs


def job_command(words: list[str]) -> str:
    return " ".join(["true", *(shlex.quote(word) for word in words)])


def input_problem(case: Case, result: Result) -> tuple[str, str] | None:
    bad_line, jobs = expected_jobs(case.stdin)
    first = dec(result.stderr).split("\n")[:1] or [""]
    if bad_line is not None:
        if result.status != 2:
            return "input-oracle", f"line {bad_line} is bad input, but exit {result.status}"
        if not first[0].startswith(f"cloudtask: input line {bad_line}: "):
            return "input-oracle", f"expected 'input line {bad_line}:', got {first[0][:100]!r}"
        return None
    if not jobs:
        if result.status != 2 or "no jobs" not in first[0]:
            return "input-oracle", f"no job lines: exit {result.status}, {first[:1]!r}"
        return None
    commands = [job_command(words) for words in jobs]
    too_long = any(len(enc(command)) >= MAX_ARG_STRLEN for command in commands)
    if result.status != (1 if too_long else 0):
        return "input-oracle", f"{len(jobs)} good jobs, exit {result.status}: {first[:1]!r}"
    if result.jobs is None:
        return "input-oracle", "exit 0 but session 1 has no readable store"
    stored = [command for _, command in result.jobs]
    if len(stored) != len(commands):
        return "input-oracle", f"{len(commands)} jobs, {len(stored)} stored"
    for number, (want, got) in enumerate(zip(commands, stored, strict=True), 1):
        if want != got:
            return "input-oracle", f"job {number} stored as {got[:60]!r}, expected {want[:60]!r}"
    if not too_long and any(state != "ok" for state, _ in result.jobs):
        return "input-oracle", "exit 0 but not every job is ok"
    return None


def logalyzer_output_problem(case: Case, result: Result) -> str | None:
    args = logalyzer_parse_args([dec(arg) for arg in case.argv])
    if args.help or args.version or not args.json:
        return None
    try:
        json.loads(result.stdout)
    except ValueError as exc:
        return f"--json printed no JSON object: {exc}"
    return None
