"""mail: FROM TO [TO...] hooks: the digest as the body, the session's picture
attached as timeline.svg; sent through sendmail (-t -oi -f FROM), or through SMTP
when CLOUDTASK_SMTP_HOST is set.

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

import os
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from ...output import one_line
from .context import DEFAULT_TIMEOUT, SECRET_VARIABLES, HookContext, error_reason, signal_problem
from .parse import Hook, MailHook

DEFAULT_SENDMAIL = Path("/usr/sbin/sendmail")
PICTURE_NAME = "timeline.svg"
TLS_MODES = ("ssl", "starttls", "none")
SMTP_PORT = 25
SMTPS_PORT = 465


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
            f"sent without {PICTURE_NAME}: cannot read {context.picture}: {error_reason(exc)}",
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
        return f"cannot run {sendmail}: {error_reason(exc)}"
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
    status = f"exited {done.returncode}" if done.returncode > 0 else signal_problem(done.returncode)
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
        return f"cannot reach {where}: {error_reason(exc)}"
    return f"{where}: {error_reason(exc)}"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}"


def _refused(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{address} ({_reply(*reply)})" for address, reply in recipients.items())
