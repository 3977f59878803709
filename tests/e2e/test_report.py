"""--report end to end: the installed command runs a session and its hook.

Mail goes through a real SMTP server (aiosmtpd) on loopback; sh and py hooks
write what they saw to files. A broken hook is one warning line and the exit
status still reflects the jobs.
"""

from __future__ import annotations

import email
import json
import socket
from collections.abc import Iterator
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from tests.support.helpers import (
    assert_usage_error,
    cloudtask,
    counts,
    env_with,
    session_ids,
    sessions_dir,
    summary,
    work_dir,
)

SECRET = "hub-key-report-5e1d"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append((envelope, email.message_from_bytes(content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_mail_report_arrives_with_subject_recipients_digest_and_picture(
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    env = env_with(
        CLOUDTASK_SMTP_HOST="127.0.0.1", CLOUDTASK_SMTP_PORT=str(port), CLOUDTASK_SMTP_TLS="none"
    )

    result = cloudtask(
        "--report=mail: ct@example.com ops@example.com dev@example.com",
        "--split=2",
        "sh",
        "-c",
        'echo "job $0"; exit $(( $0 % 3 == 0 ))',
        input=b"1\n2\n3\n4\n",
        env=env,
    )

    assert result.returncode == 1  # job 3 failed: the report does not change that
    assert counts(result) == (1, 4, 0, 0, 1, 3)
    assert len(inbox.messages) == 1
    envelope, message = inbox.messages[0]
    session = summary(result).id
    assert envelope.mail_from == "ct@example.com"
    assert sorted(envelope.rcpt_tos) == ["dev@example.com", "ops@example.com"]
    assert message["Subject"] == f"cloudtask session {session} finished: 3/4 OK"
    body, picture = [part for part in message.walk() if not part.is_multipart()][:2]
    text = body.get_payload(decode=True).decode()
    assert f"session {session}" in text and "failed" in text and "job 3" in text
    assert picture.get_content_type() == "image/svg+xml"
    assert picture.get_filename() == "timeline.svg"
    assert b"<svg" in picture.get_payload(decode=True)[:300]
    assert "report: mail:" in result.stdout
    # The summary line stays the last line of standard output.
    assert result.stdout.splitlines()[-1].startswith(f"session {session} (")


def test_sh_report_runs_in_the_session_directory_with_parameters_and_no_secrets() -> None:
    out = work_dir() / "hook.out"
    env = env_with(CLOUDTASK_HUB_APIKEY=SECRET)

    result = cloudtask(
        f"--report=sh: (pwd; env) > {out}", "--provider=local", "true", input=b"1\n2\n", env=env
    )

    assert result.returncode == 0, result.stderr
    session = summary(result).id
    lines = out.read_text().splitlines()
    assert lines[0] == str(sessions_dir() / str(session))
    env_seen = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    assert env_seen["CLOUDTASK_SESSION_ID"] == str(session)
    assert env_seen["CLOUDTASK_SESSION_STATE"] == "finished"
    assert env_seen["CLOUDTASK_JOBS_OK"] == "2" and env_seen["CLOUDTASK_JOBS_TOTAL"] == "2"
    assert SECRET not in out.read_text()
    assert (sessions_dir() / str(session) / "timeline.svg").stat().st_mode & 0o777 == 0o600


def test_py_report_sees_session_jobs_and_config() -> None:
    out = work_dir() / "py.json"
    code = (
        "import json; json.dump({'id': session['id'], 'state': session['state'], "
        "'jobs': sorted((j.id, j.state) for j in jobs), 'split': config.get('split')}, "
        f"open({str(out)!r}, 'w'))"
    )

    result = cloudtask(f"--report=py: {code}", "--split=2", "sh", "-c", "exit $0", input=b"0\n1\n")

    assert result.returncode == 1
    seen = json.loads(out.read_text())
    assert seen == {
        "id": summary(result).id,
        "state": "finished",
        "jobs": [[1, "ok"], [2, "failed"]],
        "split": "2",
    }


def test_py_report_counts_the_jobs_with_len() -> None:
    code = "print(len(jobs), 'jobs,', sum(1 for job in jobs), 'gone through')"

    result = cloudtask(f"--report=py: {code}", "echo", input=b"1\n2\n3\n")

    assert result.returncode == 0, result.stderr
    assert "report | 3 jobs, 3 gone through" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("hook", "needle"),
    [
        ("sh: exit 3", "--report: sh: exited 3"),
        ("py: 1/0", "--report: py: ZeroDivisionError"),
        ("mail: a@example.com b@example.com", "--report: mail:"),
    ],
)
def test_a_broken_hook_is_one_line_and_the_results_stand(hook: str, needle: str) -> None:
    # No SMTP host, and no sendmail here that delivers: the mail hook fails too.
    env = env_with(CLOUDTASK_SMTP_HOST="127.0.0.1", CLOUDTASK_SMTP_PORT=str(closed_port()))

    result = cloudtask(f"--report={hook}", "true", input=b"1\n2\n", env=env)

    assert result.returncode == 0, result.stderr
    assert counts(result) == (0, 2, 0, 0, 0, 2)
    problems = [line for line in result.stderr.splitlines() if "--report" in line]
    assert len(problems) == 1 and needle in problems[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"session {summary(result).id} (")


@pytest.mark.parametrize("hook", ["mail: nobody", "sh:", "py: def (", "ftp: x", "mail:"])
def test_a_bad_hook_is_refused_before_anything_runs(hook: str) -> None:
    result = cloudtask(f"--report={hook}", "true", input=b"1\n")

    assert_usage_error(result, "--report")
    assert session_ids() == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_report_runs_when_the_session_halts() -> None:
    out = work_dir() / "state"
    result = cloudtask(
        f"--report=sh: echo $CLOUDTASK_SESSION_STATE > {out}",
        "--halt=fail=1",
        "--split=1",
        "sh",
        "-c",
        "exit $0",
        input=b"1\n0\n0\n",
    )

    assert result.returncode == 1
    assert out.read_text().strip() == "halted"
