"""Every example in the user documentation runs, and shows what the tool prints.

The pages are docs/*.md and docs/commands/*.md. In them:

- A fenced block whose info string starts with `console` is an example. Its
  lines starting with `$ ` are commands (a command whose line ends in `\\`
  goes on over the next lines); the lines after a command, up to the next
  command or the end of the block, are its expected output, stdout and
  stderr merged in the order they were written. In an expected line `...`
  matches any text within the line; a line that is only `...` matches any
  number of lines (none too). Trailing blanks and trailing empty lines do
  not count. The exit status is not checked: show it with `echo $?`.
- Each command runs as `bash -c COMMAND` in the block's own new directory
  (the same one for all of the block's commands, so one can make files that
  the next uses), with stdin from /dev/null, PATH starting with the
  virtualenv's bin directory, HOME an empty directory, CLOUDTASK_SESSIONS an
  empty sessions directory, and no other CLOUDTASK_* variable (nor an SSH
  agent, AWS settings or PYTHON* variables of the caller's).
- Words after `console` ask for an environment:
    workers=N  N SSH test hosts (tests/support/hosts.py): the file `workers` has their
               addresses, one a line, and `key` the private key they accept;
    cloud      the Hub API test server (tests/support/hubserver.py) whose launches
               start real SSH test hosts (tests/support/testcloud.py):
               CLOUDTASK_HUB_URL and CLOUDTASK_HUB_APIKEY are set, and
               `cloud_key` is the key its instances accept (with workers=N
               too, those hosts accept it as well);
    smtp       a mail server on 127.0.0.1: its port is in the file
               `smtp_port`, and the messages it receives go to `mailbox`.
- A fenced block whose info string has `file=NAME` (```python file=greet)
  is a file: it is written as NAME into the directory of every later example
  of the same page, executable when it starts with `#!`.
- Any other block (sh, text, ...) is not run.

Each example is one test, named after its page and line. The examples are
independent, so they run side by side on a few threads (PARALLEL), and each
test reports its own example's outcome.

Nothing reaches beyond this machine: proxies that lead nowhere catch any
HTTP request not for 127.0.0.1, and an example that gives a Hub API key must
also give the Hub URL (or use the test cloud), so cloudtask never falls back
to the real Hub.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.hosts import TestHosts, unavailable_reason
from tests.support.processes import stop_watchdogs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VENV_BIN = ROOT / ".venv" / "bin"
BIN = VENV_BIN if (VENV_BIN / "cloudtask").exists() else Path(sys.executable).parent
HUB_APIKEY = "docs-hub-apikey-0f3c9e"
COMMAND_TIMEOUT = 60.0
ENVIRONMENTS = ("workers", "cloud", "smtp")
# Any HTTP(S) request that is not for loopback goes to a port nobody listens on.
NOWHERE = "http://127.0.0.1:9"
# Examples run side by side; most of their time is spent waiting on processes.
PARALLEL = 4


# -- reading the pages ---------------------------------------------------------


@dataclass
class Command:
    text: str
    line: int
    expected: list[str] = field(default_factory=list)


@dataclass
class Example:
    page: Path
    line: int
    options: dict[str, str]
    commands: list[Command]
    files: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(`{3,})(.*)$")


def pages() -> list[Path]:
    return sorted([*DOCS.glob("*.md"), *DOCS.glob("commands/*.md")])


def fenced_blocks(page: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line of the opening fence, info string, lines) of every fenced block."""
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if not opening:
            continue
        start, fence, body = index, opening.group(1), []
        while index < len(lines) and not lines[index].startswith(fence):
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(f"{page}:{start}: code block never closed")
        index += 1
        yield start, opening.group(2).strip(), body


def parse_commands(body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    continued = False
    for number, line in enumerate(body, start=first_line):
        if continued:
            commands[-1].text += "\n" + line
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            commands.append(Command(line[2:], number))
            continued = line.endswith("\\")
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"line {number}: output before the first command")
    return commands


def parse_options(info: str) -> dict[str, str]:
    options = {}
    for word in info.split()[1:]:
        name, _, value = word.partition("=")
        if name not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {word!r}; valid: {', '.join(ENVIRONMENTS)}")
        if name == "workers" and not value.isdigit():
            raise ValueError(f"{word}: workers=N, N a number of hosts")
        options[name] = value
    return options


def examples() -> list[Example]:
    found = []
    for page in pages():
        files: dict[str, str] = {}
        for line, info, body in fenced_blocks(page):
            words = info.split()
            names = [word.partition("=")[2] for word in words if word.startswith("file=")]
            if names:
                files[names[0]] = "".join(f"{text}\n" for text in body)
            if not words or words[0] != "console":
                continue
            where = f"{page.relative_to(ROOT)}:{line}"
            try:
                example = Example(
                    page, line, parse_options(info), parse_commands(body, line + 1), dict(files)
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if not example.commands:
                raise ValueError(f"{where}: a console block without a command")
            found.append(example)
    return found


# -- comparing output ------------------------------------------------------------


@functools.cache
def line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split("...")), re.DOTALL)


def trimmed(lines: list[str]) -> list[str]:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether actual lines fit the expected ones, with `...` as described above."""
    expected, actual = trimmed(expected), trimmed(actual)

    @functools.cache
    def fits(i: int, j: int) -> bool:
        if i == len(expected):
            return j == len(actual)
        if expected[i] == "...":
            return any(fits(i + 1, k) for k in range(j, len(actual) + 1))
        return (
            j < len(actual)
            and line_pattern(expected[i]).fullmatch(actual[j]) is not None
            and fits(i + 1, j + 1)
        )

    return fits(0, 0)


# -- environments ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mailbox:
    """aiosmtpd handler: appends every message it receives to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        if isinstance(content, str):
            content = content.encode()
        with self.path.open("ab") as out:
            out.write(content.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n\n")
        return "250 OK"


@contextlib.contextmanager
def smtp_server(directory: Path) -> Iterator[None]:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(Mailbox(directory / "mailbox"), hostname="127.0.0.1", port=port)
    controller.start()
    (directory / "smtp_port").write_text(f"{port}\n")
    try:
        yield
    finally:
        controller.stop()


@contextlib.contextmanager
def cloud_environment(directory: Path, sessions: Path, env: dict[str, str]) -> Iterator[str]:
    """The Hub API test server; yields the public key its instances accept."""
    from tests.support.hubserver import HubServer
    from tests.support.testcloud import HostsBackend

    backend = HostsBackend(directory)
    hub = HubServer(HUB_APIKEY, backend).start()
    env["CLOUDTASK_HUB_URL"] = hub.url
    env["CLOUDTASK_HUB_APIKEY"] = HUB_APIKEY
    try:
        yield backend.public_key
    finally:
        stop_watchdogs(sessions)  # a watchdog left would sweep a cloud that is gone
        hub.stop()
        left = backend.close()
        assert not left, f"the example left launched instances running: {left}"


@contextlib.contextmanager
def workers_environment(directory: Path, count: int, authorized: str | None) -> Iterator[None]:
    with TestHosts(count, authorized=authorized) as hosts:
        (directory / "workers").write_text("".join(f"{a}\n" for a in hosts.addresses))
        key = directory / "key"
        key.touch(mode=0o600)
        key.write_bytes(hosts.client_key.read_bytes())
        yield


def base_environment(home: Path, sessions: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLOUDTASK_", "AWS_"))
        and not name.startswith("PYTHON")  # PYTHONUNBUFFERED would hide output order
        and name not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")
        and "proxy" not in name.lower()
    }
    env |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "CLOUDTASK_SESSIONS": str(sessions),
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        # boto3 must find no credentials, region or metadata service beyond here.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = NOWHERE
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


# -- running ---------------------------------------------------------------------


class CommandTimeout(Exception):
    pass


def run_command(command: str, directory: Path, env: dict[str, str], groups: list[int]) -> str:
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    groups.append(process.pid)
    try:
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_groups(groups)
        process.communicate()
        raise CommandTimeout(f"{command!r} did not finish in {COMMAND_TIMEOUT:g} s") from None
    return output.decode("utf-8", "backslashreplace")


def kill_groups(groups: list[int]) -> None:
    """Whatever a command left running in the background goes."""
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def real_hub_problem(example: Example) -> str | None:
    text = "\n".join(command.text for command in example.commands)
    gives_key = re.search(r"hub-apikey|HUB_APIKEY", text, re.IGNORECASE)
    gives_url = re.search(r"hub-url|HUB_URL", text, re.IGNORECASE)
    if gives_key and not gives_url and "cloud" not in example.options:
        return f"{example.id}: a Hub API key without --hub-url would reach the real Hub"
    return None


@dataclass(frozen=True)
class Outcome:
    failure: str | None = None  # why the example fails
    skipped: str | None = None  # why it could not run here


def run_example(example: Example, base: Path) -> Outcome:
    """Run the example's commands in order; how it went."""
    if (problem := real_hub_problem(example)) is not None:
        return Outcome(failure=problem)
    needs_hosts = "workers" in example.options or "cloud" in example.options
    if needs_hosts and (reason := unavailable_reason()) is not None:
        return Outcome(skipped=f"no SSH test hosts here: {reason}")
    directory, home, sessions = base / "example", base / "home", base / "sessions"
    directory.mkdir()
    home.mkdir()
    env = base_environment(home, sessions)
    for name, text in example.files.items():
        path = directory / name
        path.write_text(text)
        if text.startswith("#!"):
            path.chmod(0o755)
    groups: list[int] = []
    with contextlib.ExitStack() as stack:
        cloud_key = None
        if "cloud" in example.options:
            cloud_key = stack.enter_context(cloud_environment(directory, sessions, env))
        if "workers" in example.options:
            count = int(example.options["workers"])
            stack.enter_context(workers_environment(directory, count, cloud_key))
        if "smtp" in example.options:
            stack.enter_context(smtp_server(directory))
        stack.callback(stop_watchdogs, sessions)
        stack.callback(kill_groups, groups)
        for command in example.commands:
            try:
                output = run_command(command.text, directory, env, groups)
            except CommandTimeout as exc:
                return Outcome(failure=f"{example.page.relative_to(ROOT)}:{command.line}: {exc}")
            if not matches(command.expected, output.splitlines()):
                return Outcome(failure=mismatch(example, command, output))
    return Outcome()


EXAMPLES = examples()


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every selected example, started at once on a few threads.

    Examples are independent (each has its own directory, home, sessions and
    test servers), and most of their time is spent waiting, so running them
    side by side keeps the whole file fast; each still passes or fails as a
    test of its own.
    """
    selected = [
        item.callspec.params["example"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_example"
        and item.path == Path(__file__)
        and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="docs") as pool:
        futures = {
            example.id: pool.submit(run_example, example, tmp_path_factory.mktemp("example"))
            for example in selected
        }
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_example(example: Example, outcomes: dict[str, Future[Outcome]]) -> None:
    outcome = outcomes[example.id].result()
    if outcome.skipped is not None:
        pytest.skip(outcome.skipped)
    if outcome.failure is not None:
        pytest.fail(outcome.failure, pytrace=False)


def mismatch(example: Example, command: Command, output: str) -> str:
    page = example.page.relative_to(ROOT)
    return "\n".join(
        [
            f"{page}:{command.line}: the output of this command differs from the page's",
            f"$ {command.text}",
            "--- expected (page)",
            *trimmed(command.expected),
            "--- actual",
            *trimmed(output.splitlines()),
        ]
    )


def test_every_page_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in pages():
        if page.name != "index.md":
            assert str(page.relative_to(DOCS)) in index, f"docs/index.md does not link {page}"


def test_the_matcher_tells_text_apart() -> None:
    assert matches(["a ... c"], ["a b c"])
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "b"], ["a", "b"])
    assert not matches(["a ... c"], ["a b d"])
    assert not matches(["a"], ["a", "b"])
    assert not matches(["a", "b"], ["a"])
    assert matches(["x  "], ["x", ""])


def test_examples_exist_on_every_page() -> None:
    with_examples = {example.page for example in EXAMPLES}
    for page in pages():
        if page.name not in ("index.md", "architecture.md"):
            assert page in with_examples, f"{page} has no runnable example"


LINK = re.compile(r"\]\(([^)\s]+)\)")
# Code holds no links: fenced blocks, and `spans` (such as `[now|soon,](fail|...)`).
CODE = re.compile(r"^```.*?^```|`[^`\n]+`", re.M | re.S)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_pages_lead_somewhere() -> None:
    for page in pages():
        for target in LINK.findall(CODE.sub("", page.read_text(encoding="utf-8"))):
            if "://" in target:
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.is_file(), f"{page.relative_to(ROOT)}: no file {target}"
            if fragment:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
                assert fragment in {anchor(h) for h in headings}, (
                    f"{page.relative_to(ROOT)}: no heading #{fragment} in {path or page.name}"
                )
