"""py: CODE and py: FILE hooks: Python run in this process with `session`, `jobs`
and `config`, its prints passed on a line at a time, the secrets out of os.environ
while it runs."""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ...output import OutputLines
from .context import SECRET_VARIABLES, HookContext, error_reason, exception_text
from .parse import CODE_NAME, PyHook, syntax_problem


def run_py(hook: PyHook, context: HookContext, say: Callable[[str], None]) -> str | None:
    """Run the code, its prints to say: None when it ends (or exits 0), else the problem."""
    if hook.file is None:
        filename, source = CODE_NAME, hook.text
    else:
        filename = str(hook.file)
        try:
            source = hook.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = error_reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            return f"cannot read {hook.file}: {reason}"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        return syntax_problem(exc, hook.file)
    namespace: dict[str, Any] = {
        "__name__": "__cloudtask_report__",
        "__file__": filename,
        "session": _session_record(context),
        "jobs": LazyJobs(context.jobs, context.job_count),
        "config": dict(context.config),
    }
    writer = LineWriter(say)
    try:
        with (
            _secrets_hidden(),
            contextlib.redirect_stdout(writer),
            contextlib.redirect_stderr(writer),
        ):
            exec(code, namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return f"exited {exc.code}"
    except Exception as exc:
        return _python_problem(exc, filename, hook.file)
    finally:
        writer.close()
    return None


def _session_record(context: HookContext) -> Record:
    record = Record(context.session)
    record.update(
        id=context.session_id,
        dir=context.session_dir,
        state=context.state,
        subject=context.subject,
        digest=context.digest_text,
        picture=context.picture,
    )
    return record


@contextlib.contextmanager
def _secrets_hidden() -> Iterator[None]:
    """Take the secrets out of os.environ while in-process code runs, then put them back.

    Not a wall (the code shares the process), but a py hook, and any command it
    starts, sees the same environment as an sh hook would.
    """
    hidden = {name: os.environ.pop(name) for name in SECRET_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


def _python_problem(exc: Exception, filename: str, file: Path | None) -> str:
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == filename
    ]
    text = exception_text(exc)
    if not lines:
        return text
    return f"{text} (at {file} line {lines[-1]})" if file else f"{text} (at line {lines[-1]})"


class LineWriter(io.TextIOBase):
    """A text stream that passes each whole line written to it on to say."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__()
        self._say = say
        # The one line splitter: linear and bounded however the hook prints.
        self._lines = OutputLines(tail_lines=0)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for line in self._lines.feed(text.encode("utf-8", "replace")):
            self._say(line)
        return len(text)

    def close(self) -> None:
        for line in self._lines.flush():
            self._say(line)
        super().close()


class Record(dict[str, Any]):
    """A dict whose keys also read as attributes: session.id is session["id"]."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class LazyJobs:
    """The session's jobs, read from the caller each time they are iterated.

    A hook that never looks at them costs nothing, and one that does streams them,
    so a session of a million jobs is not loaded into memory to run a hook.
    len() asks `count` (the store counts them) and reads no job.
    """

    def __init__(self, load: Callable[[], Iterable[Any]], count: Callable[[], int]) -> None:
        self._load = load
        self._count = count

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load())

    def __len__(self) -> int:
        return self._count()
