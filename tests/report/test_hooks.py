"""The --report hooks, run for real: mail through an SMTP server on loopback (aiosmtpd)
and through a stand-in sendmail, shell commands, and Python in the process.

A hook that breaks must come back as one line and nothing else, so most tests
check the exact line as well as what the hook did.
"""

from __future__ import annotations

import ast
import datetime
import email
import email.policy
import importlib
import ipaddress
import json
import os
import pkgutil
import signal
import socket
import ssl
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudtask.report.hooks import (
    HookContext,
    MailHook,
    PyHook,
    ShHook,
    SmtpSettings,
    parse_hook,
    run_hook,
    smtp_settings,
)

HOST = "127.0.0.1"
SENDER = "cloudtask@example.org"
RECIPIENTS = ("ops@example.org", "alice@example.com")
SUBJECT = "cloudtask session 7 finished: 98/100 OK"
DIGEST = "session 7 (42 seconds): 2/100 !OK\n\nworkers:\n  w1  50 jobs  — café\n"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>\n'
USER = "reporter"
PASSWORD = "s3cret-Pa55word"
SECRETS = {
    "CLOUDTASK_HUB_APIKEY": "hub-key-value-1234",
    "CLOUDTASK_LIBCLOUD_KEY": "libcloud-key-value-1234",
    "CLOUDTASK_LIBCLOUD_SECRET": "libcloud-secret-value-1234",
    "CLOUDTASK_SMTP_PASSWORD": PASSWORD,
}


# -- fixtures ----------------------------------------------------------------


@dataclass
class Job:
    id: int
    command: str
    state: str
    attempts: int


JOBS = [Job(1, "echo 1", "ok", 1), Job(2, "false", "failed", 2)]


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sessions" / "7"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def picture(session_dir: Path) -> Path:
    path = session_dir / "timeline.svg"
    path.write_text(SVG)
    return path


def make_context(
    session_dir: Path,
    *,
    picture: Path | None = None,
    jobs: Callable[[], Iterable[Any]] = lambda: JOBS,
    job_count: Callable[[], int] = lambda: len(JOBS),
    config: dict[str, str] | None = None,
    environment: dict[str, str] | None = None,
) -> HookContext:
    return HookContext(
        session_id=7,
        session_dir=session_dir,
        state="finished",
        subject=SUBJECT,
        digest_text=DIGEST,
        picture=picture,
        environment=environment or {},
        session={
            "counts": {"ok": 98, "failed": 1, "timeout": 1, "lost": 0, "pending": 0},
            "elapsed": 42.4,
        },
        jobs=jobs,
        config=config if config is not None else {"timeout": "3600", "split": "4"},
        job_count=job_count,
    )


class Output(list[str]):
    """Collects what a hook prints."""

    def __call__(self, line: str) -> None:
        self.append(line)


def free_port() -> int:
    """A loopback port nothing listens on (the kernel just handed it out)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every message, refuses recipients at nowhere.example."""

    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@nowhere.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        good = data.login == USER.encode() and data.password == PASSWORD.encode()
        # handled=False: aiosmtpd then answers 535 itself (True would leave the client waiting).
        return AuthResult(success=good, handled=False)

    def message(self) -> EmailMessage:
        assert len(self.envelopes) == 1, f"expected one message, got {len(self.envelopes)}"
        content = self.envelopes[0].content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Inbox, int]]]:
    """Starts aiosmtpd servers on loopback (keyword arguments go to aiosmtpd's SMTP)."""
    controllers: list[Controller] = []

    def start(**options: Any) -> tuple[Inbox, int]:
        inbox = Inbox()
        if options.pop("authenticate", False):
            options["authenticator"] = inbox.authenticate
        port = free_port()
        controller = Controller(
            inbox, hostname=HOST, port=port, server_hostname="smtp.test", **options
        )
        controller.start()
        controllers.append(controller)
        return inbox, port

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudtask test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_path, key_path)


def smtp_env(port: int, **more: str) -> dict[str, str]:
    return {"CLOUDTASK_SMTP_HOST": HOST, "CLOUDTASK_SMTP_PORT": str(port), **more}


MAIL = MailHook(SENDER, RECIPIENTS)


def check_report_mail(message: EmailMessage) -> None:
    assert message["Subject"] == SUBJECT
    assert message["From"] == SENDER
    assert [a.addr_spec for a in message["To"].addresses] == list(RECIPIENTS)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    # On the wire lines end in CRLF; the digest is the same text either way.
    assert body.get_content().replace("\r\n", "\n") == DIGEST
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    (attachment,) = attachments
    assert attachment.get_filename() == "timeline.svg"
    assert attachment.get_content_type() == "image/svg+xml"
    assert attachment.get_payload(decode=True) == SVG.encode()


# -- mail through SMTP -------------------------------------------------------


def test_mail_through_smtp_carries_subject_recipients_digest_and_picture(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path, picture: Path
) -> None:
    inbox, port = smtp_server()
    problem = run_hook(
        MAIL, make_context(session_dir, picture=picture), Output(), environ=smtp_env(port)
    )
    assert problem is None
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == list(RECIPIENTS)
    check_report_mail(inbox.message())


def test_mail_without_picture_has_no_attachment(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    inbox, port = smtp_server()
    assert run_hook(MAIL, make_context(session_dir), Output(), environ=smtp_env(port)) is None
    message = inbox.message()
    assert list(message.iter_attachments()) == []
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == DIGEST


def test_unreadable_picture_still_sends_the_digest_and_says_so(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    inbox, port = smtp_server()
    missing = session_dir / "nothing.svg"
    context = make_context(session_dir, picture=missing)
    problem = run_hook(MAIL, context, Output(), environ=smtp_env(port))
    assert problem == (
        f"--report: mail: sent without timeline.svg: cannot read {missing}: "
        "No such file or directory"
    )
    assert inbox.message()["Subject"] == SUBJECT


def test_one_refused_recipient_is_named_and_the_others_get_the_mail(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    inbox, port = smtp_server()
    hook = MailHook(SENDER, ("ops@example.org", "ghost@nowhere.example"))
    problem = run_hook(hook, make_context(session_dir), Output(), environ=smtp_env(port))
    assert problem == (
        f"--report: mail: {HOST}:{port} refused ghost@nowhere.example (550 5.1.1 no such mailbox)"
    )
    assert inbox.envelopes[0].rcpt_tos == ["ops@example.org"]


def test_every_recipient_refused_is_one_line(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    inbox, port = smtp_server()
    hook = MailHook(SENDER, ("ghost@nowhere.example",))
    problem = run_hook(hook, make_context(session_dir), Output(), environ=smtp_env(port))
    assert problem == (
        f"--report: mail: {HOST}:{port} refused ghost@nowhere.example (550 5.1.1 no such mailbox)"
    )
    assert inbox.envelopes == []


def test_unreachable_server_is_one_line(session_dir: Path) -> None:
    port = free_port()
    problem = run_hook(MAIL, make_context(session_dir), Output(), environ=smtp_env(port))
    assert problem == f"--report: mail: cannot reach {HOST}:{port}: Connection refused"


def test_login_over_starttls_with_a_trusted_certificate(
    smtp_server: Callable[..., tuple[Inbox, int]],
    certificate: Certificate,
    session_dir: Path,
    picture: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server offers AUTH only after STARTTLS (aiosmtpd's auth_require_tls),
    # and TLS is left unset: the safe default must find STARTTLS and use it.
    inbox, port = smtp_server(
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticate=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    env = smtp_env(port, CLOUDTASK_SMTP_USER=USER, CLOUDTASK_SMTP_PASSWORD=PASSWORD)
    problem = run_hook(MAIL, make_context(session_dir, picture=picture), Output(), environ=env)
    assert problem is None
    assert inbox.logins == [(USER.encode(), PASSWORD.encode())]
    check_report_mail(inbox.message())


def test_wrong_password_is_one_line_without_the_password(
    smtp_server: Callable[..., tuple[Inbox, int]],
    certificate: Certificate,
    session_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp_server(
        tls_context=certificate.server_context(), auth_required=True, authenticate=True
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    wrong = "Wrong-Pa55word"
    env = smtp_env(
        port, CLOUDTASK_SMTP_USER=USER, CLOUDTASK_SMTP_PASSWORD=wrong, CLOUDTASK_SMTP_TLS="starttls"
    )
    problem = run_hook(MAIL, make_context(session_dir), Output(), environ=env)
    assert problem is not None
    assert problem.startswith(f"--report: mail: {HOST}:{port} refused the login as {USER}: 535")
    assert wrong not in problem
    assert "\n" not in problem
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN).
    assert inbox.logins and set(inbox.logins) == {(USER.encode(), wrong.encode())}
    assert inbox.envelopes == []
    assert problem == (
        f"--report: mail: {HOST}:{port} refused the login as {USER}: "
        "535 5.7.8 Authentication credentials invalid"
    )


def test_password_is_not_sent_where_the_server_offers_no_starttls(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    # This server would take AUTH in the clear; the default rule must not.
    inbox, port = smtp_server(auth_require_tls=False, authenticate=True)
    env = smtp_env(port, CLOUDTASK_SMTP_USER=USER, CLOUDTASK_SMTP_PASSWORD=PASSWORD)
    problem = run_hook(MAIL, make_context(session_dir), Output(), environ=env)
    assert problem == (
        f"--report: mail: {HOST}:{port} does not offer STARTTLS: the password is not sent "
        "unencrypted unless CLOUDTASK_SMTP_TLS=none"
    )
    assert inbox.logins == []
    assert inbox.envelopes == []


def test_tls_none_sends_the_password_when_asked_by_name(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    inbox, port = smtp_server(auth_require_tls=False, authenticate=True)
    env = smtp_env(
        port, CLOUDTASK_SMTP_USER=USER, CLOUDTASK_SMTP_PASSWORD=PASSWORD, CLOUDTASK_SMTP_TLS="none"
    )
    assert run_hook(MAIL, make_context(session_dir), Output(), environ=env) is None
    assert inbox.logins == [(USER.encode(), PASSWORD.encode())]
    assert inbox.message()["Subject"] == SUBJECT


def test_starttls_required_but_not_offered(
    smtp_server: Callable[..., tuple[Inbox, int]], session_dir: Path
) -> None:
    inbox, port = smtp_server()
    env = smtp_env(port, CLOUDTASK_SMTP_TLS="starttls")
    problem = run_hook(MAIL, make_context(session_dir), Output(), environ=env)
    assert problem == (
        f"--report: mail: {HOST}:{port} does not offer STARTTLS (CLOUDTASK_SMTP_TLS=starttls)"
    )
    assert inbox.envelopes == []


def test_untrusted_certificate_is_one_line(
    smtp_server: Callable[..., tuple[Inbox, int]],
    certificate: Certificate,
    session_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp_server(tls_context=certificate.server_context())
    # Trust nothing: an empty CA file, so the self-signed certificate must fail.
    empty = tmp_path / "no-ca.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-ca-dir"))
    problem = run_hook(MAIL, make_context(session_dir), Output(), environ=smtp_env(port))
    assert problem is not None
    assert problem.startswith(f"--report: mail: {HOST}:{port}: TLS certificate not trusted: ")
    assert inbox.envelopes == []


def test_mail_over_implicit_tls(
    smtp_server: Callable[..., tuple[Inbox, int]],
    certificate: Certificate,
    session_dir: Path,
    picture: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp_server(
        ssl_context=certificate.server_context(), auth_require_tls=False, authenticate=True
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    env = smtp_env(
        port, CLOUDTASK_SMTP_TLS="ssl", CLOUDTASK_SMTP_USER=USER, CLOUDTASK_SMTP_PASSWORD=PASSWORD
    )
    assert run_hook(MAIL, make_context(session_dir, picture=picture), Output(), environ=env) is None
    assert inbox.logins == [(USER.encode(), PASSWORD.encode())]
    check_report_mail(inbox.message())


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"CLOUDTASK_SMTP_TLS": "maybe"},
            "CLOUDTASK_SMTP_TLS must be one of ssl, starttls, none, not 'maybe'",
        ),
        ({"CLOUDTASK_SMTP_PORT": "smtp"}, "CLOUDTASK_SMTP_PORT must be a port number, not 'smtp'"),
        (
            {"CLOUDTASK_SMTP_USER": USER},
            "CLOUDTASK_SMTP_USER is set but CLOUDTASK_SMTP_PASSWORD is not",
        ),
        (
            {"CLOUDTASK_SMTP_PASSWORD": PASSWORD},
            "CLOUDTASK_SMTP_PASSWORD is set but CLOUDTASK_SMTP_USER is not",
        ),
    ],
)
def test_bad_smtp_settings_are_one_line(session_dir: Path, env: dict[str, str], line: str) -> None:
    environ = {"CLOUDTASK_SMTP_HOST": HOST, **env}
    assert run_hook(MAIL, make_context(session_dir), Output(), environ=environ) == (
        f"--report: mail: {line}"
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"CLOUDTASK_SMTP_HOST": "mx"}, SmtpSettings("mx", 25, "auto")),
        (
            {"CLOUDTASK_SMTP_HOST": "mx", "CLOUDTASK_SMTP_TLS": "ssl"},
            SmtpSettings("mx", 465, "ssl"),
        ),
        (
            {"CLOUDTASK_SMTP_HOST": "mx", "CLOUDTASK_SMTP_PORT": "465"},
            SmtpSettings("mx", 465, "ssl"),
        ),
        (
            {
                "CLOUDTASK_SMTP_HOST": "mx",
                "CLOUDTASK_SMTP_PORT": "587",
                "CLOUDTASK_SMTP_TLS": "STARTTLS",
            },
            SmtpSettings("mx", 587, "starttls"),
        ),
    ],
)
def test_smtp_settings_defaults(env: dict[str, str], expected: SmtpSettings | None) -> None:
    assert smtp_settings(env) == expected


def test_smtp_settings_never_show_the_password() -> None:
    settings = smtp_settings(
        {
            "CLOUDTASK_SMTP_HOST": "mx",
            "CLOUDTASK_SMTP_USER": USER,
            "CLOUDTASK_SMTP_PASSWORD": PASSWORD,
        }
    )
    assert settings is not None and settings.password == PASSWORD
    assert PASSWORD not in repr(settings)


# -- mail through sendmail ---------------------------------------------------


def fake_sendmail(tmp_path: Path, status: int = 0, complaint: str = "") -> tuple[Path, Path]:
    """A sendmail that writes its argv and the message it read to files, and exits status."""
    script, record = tmp_path / "sendmail", tmp_path / "sent"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {record}.argv\n'
        f"cat > {record}.message\n"
        + (f"echo '{complaint}' >&2\n" if complaint else "")
        + f"exit {status}\n"
    )
    script.chmod(0o755)
    return script, record


def test_mail_through_sendmail(tmp_path: Path, session_dir: Path, picture: Path) -> None:
    sendmail, record = fake_sendmail(tmp_path)
    context = make_context(session_dir, picture=picture)
    assert run_hook(MAIL, context, Output(), sendmail=sendmail, environ={}) is None
    assert Path(f"{record}.argv").read_text().split("\n")[:-1] == ["-t", "-oi", "-f", SENDER]
    raw = Path(f"{record}.message").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    check_report_mail(message)
    # Local sendmail takes the local line ending, not SMTP's CRLF.
    assert b"\r\n" not in raw


def test_sendmail_failure_is_one_line(tmp_path: Path, session_dir: Path) -> None:
    sendmail, _ = fake_sendmail(tmp_path, status=75, complaint="queue directory not writable")
    problem = run_hook(MAIL, make_context(session_dir), Output(), sendmail=sendmail, environ={})
    assert problem == f"--report: mail: {sendmail} exited 75: queue directory not writable"


def test_missing_sendmail_is_one_line(tmp_path: Path, session_dir: Path) -> None:
    sendmail = tmp_path / "no" / "sendmail"
    problem = run_hook(MAIL, make_context(session_dir), Output(), sendmail=sendmail, environ={})
    assert problem == (
        f"--report: mail: no sendmail at {sendmail} "
        "(CLOUDTASK_SMTP_HOST sends through an SMTP server)"
    )


def test_sendmail_gets_no_secrets(
    tmp_path: Path, session_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sendmail = tmp_path / "sendmail"
    dump = tmp_path / "environment"
    sendmail.write_text(f"#!/bin/sh\nenv > {dump}\ncat > /dev/null\n")
    sendmail.chmod(0o755)
    environ = {**SECRETS, "PATH": os.environ["PATH"]}
    assert (
        run_hook(MAIL, make_context(session_dir), Output(), sendmail=sendmail, environ=environ)
        is None
    )
    seen = dump.read_text()
    for name, value in SECRETS.items():
        assert name not in seen and value not in seen


# -- sh ----------------------------------------------------------------------


def test_sh_runs_in_the_session_directory_with_the_parameters_and_no_secrets(
    session_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLOUDTASK_STRAY", "from the controller")
    output = Output()
    context = make_context(
        session_dir,
        config={"timeout": "3600", "split": "4", "ec2-region": "eu-west-1"},
        environment={"CLOUDTASK_EXTRA": "given by the caller"},
    )
    hook = ShHook("pwd -P; env | grep ^CLOUDTASK_ | sort > env.txt; echo done")
    assert run_hook(hook, context, output) is None
    assert output == [str(session_dir.resolve()), "done"]
    seen = dict(line.split("=", 1) for line in (session_dir / "env.txt").read_text().splitlines())
    assert seen == {
        "CLOUDTASK_SESSION_ID": "7",
        "CLOUDTASK_SESSION_DIR": str(session_dir),
        "CLOUDTASK_SESSION_STATE": "finished",
        "CLOUDTASK_JOBS_OK": "98",
        "CLOUDTASK_JOBS_FAILED": "1",
        "CLOUDTASK_JOBS_TIMEOUT": "1",
        "CLOUDTASK_JOBS_LOST": "0",
        "CLOUDTASK_JOBS_PENDING": "0",
        "CLOUDTASK_JOBS_RUNNING": "0",
        "CLOUDTASK_JOBS_TOTAL": "100",
        "CLOUDTASK_ELAPSED": "42",
        "CLOUDTASK_TIMEOUT": "3600",
        "CLOUDTASK_SPLIT": "4",
        "CLOUDTASK_EC2_REGION": "eu-west-1",
        "CLOUDTASK_EXTRA": "given by the caller",
    }


def test_sh_caller_cannot_pass_a_secret_either(session_dir: Path) -> None:
    context = make_context(session_dir, environment={"CLOUDTASK_HUB_APIKEY": "leaked-key"})
    output = Output()
    assert run_hook(ShHook('echo "[$CLOUDTASK_HUB_APIKEY]"'), context, output) is None
    assert output == ["[]"]


def test_sh_output_reaches_the_callback_line_by_line(session_dir: Path) -> None:
    output = Output()
    hook = ShHook("echo one; echo two >&2; printf 'no newline'")
    assert run_hook(hook, make_context(session_dir), output) is None
    assert output == ["one", "two", "no newline"]


def test_sh_non_zero_exit_is_one_line(session_dir: Path) -> None:
    output = Output()
    problem = run_hook(ShHook("echo trying; exit 3"), make_context(session_dir), output)
    assert problem == "--report: sh: exited 3"
    assert output == ["trying"]


def test_sh_killed_by_a_signal(session_dir: Path) -> None:
    problem = run_hook(ShHook("kill -TERM $$"), make_context(session_dir), Output())
    assert problem == "--report: sh: killed by SIGTERM"


def test_sh_timeout_kills_the_command_and_what_it_started(session_dir: Path) -> None:
    started = time.monotonic()
    problem = run_hook(
        ShHook("sleep 60 & echo $! > child.pid; sleep 60"),
        make_context(session_dir),
        Output(),
        timeout=0.5,
    )
    assert problem == "--report: sh: timed out after 0.5 s"
    assert time.monotonic() - started < 10
    child = int((session_dir / "child.pid").read_text())
    # SIGKILL is sent to the group before run_hook returns; on a busy machine
    # the child may take a moment to be gone.
    deadline = time.monotonic() + 5
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(child), "the hook's background child outlived its timeout"


def test_sh_background_child_does_not_hold_the_hook(session_dir: Path) -> None:
    # The child keeps the output pipe open after the shell has exited.
    started = time.monotonic()
    output = Output()
    problem = run_hook(
        ShHook("sleep 60 & echo $! > child.pid; echo done"), make_context(session_dir), output
    )
    elapsed = time.monotonic() - started
    os.kill(int((session_dir / "child.pid").read_text()), signal.SIGKILL)
    assert problem is None
    assert output == ["done"]
    assert elapsed < 10


def test_sh_failing_output_callback_does_not_fail_the_hook(session_dir: Path) -> None:
    def broken(line: str) -> None:
        raise RuntimeError("log is gone")

    assert run_hook(ShHook("echo hello; touch ran"), make_context(session_dir), broken) is None
    assert (session_dir / "ran").exists()


def test_sh_missing_session_directory(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    problem = run_hook(ShHook("true"), make_context(missing), Output())
    assert problem == f"--report: sh: no session directory {missing}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent (init, here) to reap it.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))


# -- py ----------------------------------------------------------------------

PY_CODE = """
import json, pathlib
record = {
    "id": session.id,
    "state": session["state"],
    "dir": str(session.dir),
    "counts": session.counts,
    "elapsed": session.elapsed,
    "subject": session.subject,
    "jobs": [(job.id, job.command, job.state, job.attempts) for job in jobs],
    "again": len(list(jobs)),
    "config": config,
}
pathlib.Path(session.dir, "seen.json").write_text(json.dumps(record))
print("wrote", len(record["jobs"]), "jobs")
"""


def check_seen(session_dir: Path) -> None:
    seen = json.loads((session_dir / "seen.json").read_text())
    assert seen == {
        "id": 7,
        "state": "finished",
        "dir": str(session_dir),
        "counts": {"ok": 98, "failed": 1, "timeout": 1, "lost": 0, "pending": 0},
        "elapsed": 42.4,
        "subject": SUBJECT,
        "jobs": [[1, "echo 1", "ok", 1], [2, "false", "failed", 2]],
        "again": 2,
        "config": {"timeout": "3600", "split": "4"},
    }


def test_py_code_sees_session_jobs_and_config(session_dir: Path) -> None:
    output = Output()
    hook = parse_hook("py: " + PY_CODE)
    assert isinstance(hook, PyHook) and hook.file is None
    assert run_hook(hook, make_context(session_dir), output) is None
    check_seen(session_dir)
    assert output == ["wrote 2 jobs"]


def test_py_file(tmp_path: Path, session_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "hooks" / "report.py"
    script.parent.mkdir()
    script.write_text(PY_CODE)
    monkeypatch.chdir(tmp_path)
    hook = parse_hook("py: hooks/report.py")
    assert hook == PyHook("hooks/report.py", script)
    monkeypatch.chdir("/")  # the file stays found from anywhere
    assert run_hook(hook, make_context(session_dir), Output()) is None
    check_seen(session_dir)


def test_py_jobs_are_not_read_unless_used(session_dir: Path) -> None:
    def jobs() -> list[Job]:
        raise AssertionError("jobs read")

    assert run_hook(PyHook("x = 1"), make_context(session_dir, jobs=jobs), Output()) is None


def test_py_len_of_jobs_is_counted_without_reading_a_job(session_dir: Path) -> None:
    def jobs() -> list[Job]:
        raise AssertionError("jobs read")

    output = Output()
    context = make_context(session_dir, jobs=jobs, job_count=lambda: 1_000_000)
    code = "print(len(jobs), 'jobs'); print('some' if jobs else 'none')"
    assert run_hook(PyHook(code), context, output) is None
    assert output == ["1000000 jobs", "some"]


def test_py_len_of_jobs_agrees_with_going_through_them(session_dir: Path) -> None:
    output = Output()
    code = "print(len(jobs), len(list(jobs)), [job.id for job in jobs])"
    assert run_hook(PyHook(code), make_context(session_dir), output) is None
    assert output == ["2 2 [1, 2]"]
    empty = make_context(session_dir, jobs=list, job_count=lambda: 0)
    assert run_hook(PyHook("print(len(jobs), bool(jobs))"), empty, output) is None
    assert output[-1] == "0 False"


def test_py_syntax_error_in_a_file_is_one_line(tmp_path: Path, session_dir: Path) -> None:
    script = tmp_path / "report.py"
    script.write_text("x = 1\nif x\n    print(x)\n")
    hook = parse_hook(f"py: {script}")
    problem = run_hook(hook, make_context(session_dir), Output())
    assert problem == f"--report: py: syntax error at {script} line 2: expected ':'"


def test_py_syntax_error_in_code_is_one_line(session_dir: Path) -> None:
    problem = run_hook(PyHook("print(("), make_context(session_dir), Output())
    assert problem == "--report: py: syntax error at line 1: '(' was never closed"


def test_py_exception_is_one_line_with_its_line(session_dir: Path) -> None:
    output = Output()
    hook = parse_hook("py: print('before')\nratio = session.counts['ok'] / 0")
    problem = run_hook(hook, make_context(session_dir), output)
    assert problem == "--report: py: ZeroDivisionError: division by zero (at line 2)"
    assert output == ["before"]


def test_py_exception_in_a_file_names_it(tmp_path: Path, session_dir: Path) -> None:
    script = tmp_path / "report.py"
    script.write_text("def go():\n    raise KeyError('missing')\n\ngo()\n")
    problem = run_hook(parse_hook(f"py: {script}"), make_context(session_dir), Output())
    assert problem == f"--report: py: KeyError: 'missing' (at {script} line 2)"


def test_py_exit(session_dir: Path) -> None:
    context = make_context(session_dir)
    assert run_hook(PyHook("import sys; sys.exit(0)"), context, Output()) is None
    assert (
        run_hook(PyHook("import sys; sys.exit(2)"), context, Output()) == "--report: py: exited 2"
    )


def test_py_sees_no_secrets_and_they_come_back(
    session_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    code = f"import os; print(sorted(n for n in os.environ if n in {set(SECRETS)!r}))"
    output = Output()
    assert run_hook(PyHook(code), make_context(session_dir), output) is None
    assert output == ["[]"]
    assert {name: os.environ[name] for name in SECRETS} == SECRETS


def test_py_output_is_restored(session_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_hook(PyHook("print('to the callback')"), make_context(session_dir), Output())
    print("to stdout")
    assert capsys.readouterr().out == "to stdout\n"


def test_problem_lines_never_carry_a_secret(session_dir: Path) -> None:
    code = f"raise RuntimeError('server said {PASSWORD}')"
    problem = run_hook(
        PyHook(code),
        make_context(session_dir),
        Output(),
        environ={"CLOUDTASK_SMTP_PASSWORD": PASSWORD},
    )
    assert problem == "--report: py: RuntimeError: server said ******** (at line 1)"


# -- parse_hook --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hook"),
    [
        ("mail: a@example.org b@example.org", MailHook("a@example.org", ("b@example.org",))),
        (
            "mail:a@x.org  b@y.org, c@z.org",
            MailHook("a@x.org", ("b@y.org", "c@z.org")),
        ),
        ("MAIL: a@x.org b@y.org", MailHook("a@x.org", ("b@y.org",))),
        ("sh: ./notify.sh --all ", ShHook("./notify.sh --all")),
        ("sh:echo a:b", ShHook("echo a:b")),
        ("py: print(session.id)", PyHook("print(session.id)")),
        ("py:\n    x = 1\n    print(x)\n", PyHook("x = 1\nprint(x)")),
    ],
)
def test_parse_hook(text: str, hook: MailHook | ShHook | PyHook) -> None:
    assert parse_hook(text) == hook
    assert parse_hook(str(hook)) == hook


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected KIND: ARGUMENTS, where KIND is mail, sh or py"),
        ("echo hello", "expected KIND: ARGUMENTS, where KIND is mail, sh or py"),
        ("slack: #ops", "unknown hook 'slack'; valid: mail, sh, py"),
        ("mail:", "mail: expected FROM TO [TO...]"),
        ("mail: a@example.org", "mail: expected FROM TO [TO...]"),
        ("mail: a@example.org ops", "mail: 'ops' is not an e-mail address (name@domain)"),
        ("mail: me b@example.org", "mail: 'me' is not an e-mail address (name@domain)"),
        (
            "mail: a@example.org @example.org",
            "mail: '@example.org' is not an e-mail address (name@domain)",
        ),
        ("mail: a@example.org b@", "mail: 'b@' is not an e-mail address (name@domain)"),
        (
            "mail: a@example.org <b@x.org>",
            "mail: '<b@x.org>' is not an e-mail address (name@domain)",
        ),
        ("sh:", "sh: nothing to run"),
        ("sh:   ", "sh: nothing to run"),
        ("py:", "py: nothing to run"),
        ("py: missing-report.py", "py: no such file: missing-report.py"),
        ("py: print((", "py: syntax error at line 1: '(' was never closed"),
    ],
)
def test_parse_hook_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_hook(text)
    assert str(caught.value) == reason


def imports(module: Any) -> list[str]:
    """The modules a source file imports, relative ones with their leading dots."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_the_hook_parser_imports_nothing_of_cloudtask() -> None:
    """The options table imports it to check --report: a leaf, so no import cycle."""
    from cloudtask.report.hooks import parse

    assert imports(parse), "the parser imports the standard library at least"
    assert not [name for name in imports(parse) if name.startswith((".", "cloudtask"))]


def test_no_hook_module_imports_the_options_table() -> None:
    """config imports the parser: hooks importing config would be a cycle again."""
    import cloudtask.report.hooks as package

    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        assert not [name for name in imports(module) if name.endswith("config")], info.name


def test_a_py_hooks_endless_line_is_passed_on_in_pieces_in_bounded_memory() -> None:
    """print() without a newline, 20 MB of it: the old LineWriter copied the
    whole pending line on every write, quadratic and unbounded."""
    from cloudtask.output import LINE_LIMIT
    from cloudtask.report.hooks import LineWriter

    sizes: list[int] = []
    writer = LineWriter(lambda line: sizes.append(len(line)))
    chunk = "y" * 10_000
    tracemalloc.start()
    try:
        for _ in range(2_000):
            writer.write(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    writer.close()
    assert sum(sizes) == 20_000_000
    assert max(sizes) <= LINE_LIMIT
    assert peak < 2_000_000
