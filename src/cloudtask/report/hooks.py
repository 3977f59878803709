"""The --report hooks: the one thing run when a session ends (finished, halted or aborted).

A hook runs after the session's results are committed, so it can only add to them
(a mail, whatever a command does); it must never lose or hide them. That is why
running a hook never raises and never prints a traceback: every failure (bad Python,
a command that exits non-zero or runs too long, a mail server that cannot be reached
or refuses) comes back as one line for the caller to show.

Three kinds, parsed by parse_hook from the option's text:

    mail: FROM TO [TO...]   the digest as the body, the session's picture attached as
                            timeline.svg; sent through sendmail (-t -oi -f FROM), or
                            through SMTP when CLOUDTASK_SMTP_HOST is set
    sh: COMMAND             /bin/sh -c COMMAND in the session directory, with the
                            session's parameters in CLOUDTASK_* variables and no secrets
    py: CODE | py: FILE     Python run in this process with `session`, `jobs` and `config`

SMTP is configured by the environment only, so that the password is never stored
with a session:

    CLOUDTASK_SMTP_HOST      send through this server instead of sendmail
    CLOUDTASK_SMTP_PORT      default 465 with TLS=ssl, else 25
    CLOUDTASK_SMTP_USER      log in as this user; needs the password
    CLOUDTASK_SMTP_PASSWORD  secret: never logged, shown, or handed to a hook
    CLOUDTASK_SMTP_TLS       ssl | starttls | none; unset: ssl on port 465, else
                             STARTTLS when the server offers it, and no encryption
                             only when there is no password to protect

Certificates are always verified against the system's trust store (OpenSSL reads
SSL_CERT_FILE for a private CA). TLS=none is the only way to send a password
unencrypted, and it has to be asked for by name.
"""

from __future__ import annotations

import contextlib
import io
import os
import selectors
import signal
import smtplib
import socket
import ssl
import subprocess
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from .. import environment
from ..output import OutputLines, one_line, scrub
from ..scheduler import JobState

DEFAULT_TIMEOUT = 600.0  # seconds a hook (command, sendmail, SMTP exchange) may take
DEFAULT_SENDMAIL = Path("/usr/sbin/sendmail")
PICTURE_NAME = "timeline.svg"
PREFIX = "CLOUDTASK_"
KINDS = ("mail", "sh", "py")
CODE_NAME = "<--report py>"  # the file name tracebacks and syntax errors give for py: CODE

# Secrets the controller may hold in its environment. No hook inherits them. Every
# option the table marks secret is among them (a unit test keeps the two in step),
# so hooks need not import the options table, which imports the hook parser.
SECRET_VARIABLES = environment.SECRET_NAMES

TLS_MODES = ("ssl", "starttls", "none")
SMTP_PORT = 25
SMTPS_PORT = 465

# After the shell exits, its output is read this much longer: a child it left in
# the background may hold the pipe open for good, and the hook is over.
DRAIN_SECONDS = 1.0
POLL_SECONDS = 0.1
READ_SIZE = 65536  # bytes of a hook's output read at a time

# Secret values shorter than this are not scrubbed from problem lines: they would
# mangle the line and hide nothing worth hiding.
SCRUB_MINIMUM = 4


# -- hooks -------------------------------------------------------------------


@dataclass(frozen=True)
class MailHook:
    sender: str
    recipients: tuple[str, ...]

    def __str__(self) -> str:
        return f"mail: {self.sender} {' '.join(self.recipients)}"


@dataclass(frozen=True)
class ShHook:
    command: str

    def __str__(self) -> str:
        return f"sh: {self.command}"


@dataclass(frozen=True)
class PyHook:
    text: str  # the code, or the file's name as given
    file: Path | None = None  # absolute, when the text names a .py file

    def __str__(self) -> str:
        return f"py: {self.text}"


Hook = MailHook | ShHook | PyHook


def parse_hook(text: str) -> Hook:
    """The hook a --report text describes; ValueError says what is wrong with it."""
    kind, colon, rest = text.partition(":")
    kind = kind.strip().lower()
    if not colon or not kind:
        raise ValueError("expected KIND: ARGUMENTS, where KIND is mail, sh or py")
    if kind not in KINDS:
        raise ValueError(f"unknown hook {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "mail":
        return _parse_mail(rest)
    if not rest.strip():
        raise ValueError(f"{kind}: nothing to run")
    if kind == "sh":
        return ShHook(rest.strip())
    return _parse_py(rest)


def _parse_mail(rest: str) -> MailHook:
    addresses = rest.replace(",", " ").split()
    if len(addresses) < 2:
        raise ValueError("mail: expected FROM TO [TO...]")
    for address in addresses:
        _check_address(address)
    return MailHook(addresses[0], tuple(addresses[1:]))


def _check_address(address: str) -> None:
    local, _, domain = address.partition("@")
    if (
        address.count("@") != 1
        or not local
        or not domain
        or any(c in '<>()[]\\;:"' or not c.isprintable() for c in address)
    ):
        raise ValueError(f"mail: {address!r} is not an e-mail address (name@domain)")


def _parse_py(rest: str) -> PyHook:
    text = rest.strip()
    if text.endswith(".py") and "\n" not in text:
        path = Path(text).expanduser()
        with contextlib.suppress(OSError, ValueError):
            if path.is_file():
                return PyHook(text, path.resolve())
        # One word ending in .py is a file name, not Python worth running.
        if not any(c.isspace() for c in text):
            raise ValueError(f"py: no such file: {text}")
    code = textwrap.dedent(rest.strip("\n")).strip()
    try:
        compile(code, CODE_NAME, "exec")
    except SyntaxError as exc:
        # Found now, before the session runs, rather than when it is over.
        raise ValueError(f"py: {_syntax_problem(exc, None)}") from None
    return PyHook(code)


# -- what a hook is given ----------------------------------------------------


@dataclass(frozen=True)
class HookContext:
    """The ended session, as the hooks see it. Nothing in it is secret."""

    session_id: int
    session_dir: Path
    state: str  # finished, halted, aborted
    subject: str  # the mail's subject, e.g. "cloudtask session 7 finished: 98/100 OK"
    digest_text: str  # the session report (logalyzer): the mail's body
    picture: Path | None  # the timeline SVG, attached to the mail when given
    environment: Mapping[str, str]  # CLOUDTASK_* variables for sh, over the derived ones
    session: Mapping[str, object]  # counts (state -> number), elapsed (seconds), ...
    jobs: Callable[[], Iterable[Any]]  # called only when a py hook iterates `jobs`
    config: Mapping[str, str]  # stored options by name, no secrets
    job_count: Callable[[], int]  # how many jobs `jobs` gives, counted without reading them


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


# -- running a hook ----------------------------------------------------------


def run_hook(
    hook: Hook,
    context: HookContext,
    output: Callable[[str], None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sendmail: Path = DEFAULT_SENDMAIL,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Run hook for the ended session: None when it worked, else one line saying why not.

    output receives what the hook prints, a line at a time. environ (default
    os.environ) gives the SMTP settings and the base of an sh hook's environment.
    Never raises, except that KeyboardInterrupt is reported too.
    """
    # The secrets are in environment.HIDDEN, not os.environ: the SMTP password
    # comes from there; hook_environment strips every secret again for sh.
    environ = environment.full() if environ is None else environ
    say = _guarded(output)
    try:
        if isinstance(hook, MailHook):
            problem = send_mail(hook, context, environ, sendmail=sendmail, timeout=timeout)
        elif isinstance(hook, ShHook):
            problem = _run_sh(hook, context, say, environ, timeout)
        else:
            problem = _run_py(hook, context, say)
    except KeyboardInterrupt:
        problem = "interrupted"
    except Exception as exc:  # the last guard: a hook never takes the session down
        problem = _exception_text(exc)
    if problem is None:
        return None
    return one_line(scrub(f"--report: {_kind(hook)}: {problem}", _secrets(environ)))


def _kind(hook: Hook) -> str:
    return str(hook).partition(":")[0]


def _guarded(output: Callable[[str], None]) -> Callable[[str], None]:
    """output, made harmless: a failing logger must not fail the hook."""

    def say(line: str) -> None:
        with contextlib.suppress(Exception):
            output(line)

    return say


def _secrets(environ: Mapping[str, str]) -> list[str]:
    """The secret values in environ worth scrubbing from a problem line."""
    values = (environ.get(name, "") for name in SECRET_VARIABLES)
    return [value for value in values if len(value) >= SCRUB_MINIMUM]


def _exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# -- mail --------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: str  # ssl, starttls, none, or auto (unset)
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def mail_problem(
    hook: Hook, environ: Mapping[str, str], sendmail: Path = DEFAULT_SENDMAIL
) -> str | None:
    """Why a mail hook could not send at all, found before the batch runs: no
    sendmail and no SMTP server set, bad SMTP settings, or an SMTP host whose
    name is unknown. None when it can try (the server may still refuse)."""
    if not isinstance(hook, MailHook):
        return None
    try:
        settings = smtp_settings(environ)
    except ValueError as exc:
        return str(exc)
    if settings is None:
        if os.access(sendmail, os.X_OK):
            return None
        return f"no {sendmail} on this machine, and CLOUDTASK_SMTP_HOST is not set"
    try:
        socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"CLOUDTASK_SMTP_HOST: unknown host {settings.host!r}"
    return None


def smtp_settings(environ: Mapping[str, str]) -> SmtpSettings | None:
    """The SMTP server to send through, or None for sendmail; ValueError if misconfigured."""
    host = environ.get("CLOUDTASK_SMTP_HOST", "").strip()
    if not host:
        return None
    tls = environ.get("CLOUDTASK_SMTP_TLS", "").strip().lower() or "auto"
    if tls not in (*TLS_MODES, "auto"):
        raise ValueError(f"CLOUDTASK_SMTP_TLS must be one of {', '.join(TLS_MODES)}, not {tls!r}")
    port_text = environ.get("CLOUDTASK_SMTP_PORT", "").strip()
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"CLOUDTASK_SMTP_PORT must be a port number, not {port_text!r}")
        port = int(port_text)
    else:
        port = SMTPS_PORT if tls == "ssl" else SMTP_PORT
    if tls == "auto" and port == SMTPS_PORT:
        tls = "ssl"  # port 465 speaks TLS from the first byte
    user = environ.get("CLOUDTASK_SMTP_USER") or None
    password = environ.get("CLOUDTASK_SMTP_PASSWORD") or None
    if (user is None) != (password is None):
        given, missing = ("USER", "PASSWORD") if user else ("PASSWORD", "USER")
        raise ValueError(f"CLOUDTASK_SMTP_{given} is set but CLOUDTASK_SMTP_{missing} is not")
    return SmtpSettings(host, port, tls, user, password)


def build_message(hook: MailHook, context: HookContext) -> tuple[EmailMessage, str | None]:
    """The report mail, and what kept the picture out of it, if anything did."""
    message = EmailMessage()
    message["From"] = hook.sender
    message["To"] = ", ".join(hook.recipients)
    message["Subject"] = one_line(context.subject)
    message["Date"] = formatdate(localtime=True)
    # The sender's domain, not make_msgid's default: that looks the host up in DNS.
    message["Message-ID"] = make_msgid(domain=hook.sender.rpartition("@")[2])
    message.set_content(context.digest_text)
    if context.picture is None:
        return message, None
    try:
        picture = context.picture.read_bytes()
    except OSError as exc:
        return (
            message,
            f"sent without {PICTURE_NAME}: cannot read {context.picture}: {_reason(exc)}",
        )
    message.add_attachment(picture, maintype="image", subtype="svg+xml", filename=PICTURE_NAME)
    return message, None


def send_mail(
    hook: MailHook,
    context: HookContext,
    environ: Mapping[str, str],
    *,
    sendmail: Path = DEFAULT_SENDMAIL,
    timeout: float = DEFAULT_TIMEOUT,
) -> str | None:
    """Mail the report: None when sent whole, else the problem (without the kind)."""
    try:
        settings = smtp_settings(environ)
    except ValueError as exc:
        return str(exc)
    message, missing_picture = build_message(hook, context)
    if settings is None:
        problem = _send_sendmail(message, hook.sender, sendmail, environ, timeout)
    else:
        problem = _send_smtp(message, settings, timeout)
    return problem or missing_picture


def _send_sendmail(
    message: EmailMessage,
    sender: str,
    sendmail: Path,
    environ: Mapping[str, str],
    timeout: float,
) -> str | None:
    environment = {k: v for k, v in environ.items() if k not in SECRET_VARIABLES}
    try:
        done = subprocess.run(
            [str(sendmail), "-t", "-oi", "-f", sender],
            input=message.as_bytes(),
            capture_output=True,
            env=environment,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return f"no sendmail at {sendmail} (CLOUDTASK_SMTP_HOST sends through an SMTP server)"
    except subprocess.TimeoutExpired:
        return f"{sendmail} did not finish in {timeout:g} s"
    except OSError as exc:
        return f"cannot run {sendmail}: {_reason(exc)}"
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
    status = f"exited {done.returncode}" if done.returncode > 0 else _signal(done.returncode)
    return f"{sendmail} {status}" + (f": {said[0]}" if said else "")


def _send_smtp(message: EmailMessage, settings: SmtpSettings, timeout: float) -> str | None:
    connected = False
    try:
        server = _connect(settings, timeout)
        connected = True
        with server:
            problem = _secure(server, settings)
            if problem is not None:
                return problem
            if settings.user is not None and settings.password is not None:
                server.login(settings.user, settings.password)
            refused = server.send_message(message)
    except OSError as exc:  # smtplib's and ssl's errors are OSErrors too
        return _smtp_problem(exc, settings, connected)
    if refused:
        return f"{settings.where} refused {_refused(refused)}"
    return None


def _connect(settings: SmtpSettings, timeout: float) -> smtplib.SMTP:
    if settings.tls == "ssl":
        return smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=timeout, context=ssl.create_default_context()
        )
    return smtplib.SMTP(settings.host, settings.port, timeout=timeout)


def _secure(server: smtplib.SMTP, settings: SmtpSettings) -> str | None:
    """Start TLS as the settings ask; the reason not to go on, if there is one."""
    server.ehlo_or_helo_if_needed()
    if settings.tls in ("ssl", "none"):
        return None
    if server.has_extn("starttls"):
        server.starttls(context=ssl.create_default_context())
        server.ehlo()
        return None
    if settings.tls == "starttls":
        return f"{settings.where} does not offer STARTTLS (CLOUDTASK_SMTP_TLS=starttls)"
    if settings.password is not None:
        return (
            f"{settings.where} does not offer STARTTLS: the password is not sent "
            "unencrypted unless CLOUDTASK_SMTP_TLS=none"
        )
    return None


def _smtp_problem(exc: OSError, settings: SmtpSettings, connected: bool) -> str:
    where = settings.where
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (
            f"{where} refused the login as {settings.user}: {_reply(exc.smtp_code, exc.smtp_error)}"
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"{where} refused {_refused(exc.recipients)}"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"{where} refused the sender {exc.sender}: {_reply(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection" + (f": {exc}" if str(exc) else "")
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{where} answered {_reply(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPNotSupportedError) and "AUTH" in str(exc):
        return f"{where} does not offer AUTH, needed to log in as {settings.user}"
    if isinstance(exc, smtplib.SMTPException):
        return f"{where}: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{where}: TLS certificate not trusted: {exc.verify_message} "
            "(SSL_CERT_FILE names a CA to trust)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS failed: {exc.reason or exc}"
    if not connected:
        return f"cannot reach {where}: {_reason(exc)}"
    return f"{where}: {_reason(exc)}"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}"


def _refused(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{address} ({_reply(*reply)})" for address, reply in recipients.items())


# -- sh ----------------------------------------------------------------------


def _run_sh(
    hook: ShHook,
    context: HookContext,
    say: Callable[[str], None],
    environ: Mapping[str, str],
    timeout: float,
) -> str | None:
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
        return f"cannot run /bin/sh: {_reason(exc)}"
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
        return _signal(process.returncode)
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


def _signal(returncode: int) -> str:
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


# -- py ----------------------------------------------------------------------


def _run_py(hook: PyHook, context: HookContext, say: Callable[[str], None]) -> str | None:
    if hook.file is None:
        filename, source = CODE_NAME, hook.text
    else:
        filename = str(hook.file)
        try:
            source = hook.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            return f"cannot read {hook.file}: {reason}"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        return _syntax_problem(exc, hook.file)
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


def _syntax_problem(exc: SyntaxError, file: Path | None) -> str:
    where = f"{file} line {exc.lineno}" if file else f"line {exc.lineno}"
    return f"syntax error at {where}: {exc.msg}"


def _python_problem(exc: Exception, filename: str, file: Path | None) -> str:
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == filename
    ]
    text = _exception_text(exc)
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
