"""cloudtask-launch-workers and cloudtask-destroy-workers: workers outside a session.

    cloudtask-launch-workers [OPTIONS] N FILE|-
    cloudtask-destroy-workers [OPTIONS] FILE|-
    cloudtask-destroy-workers [OPTIONS] --session=ID

They take the provider options cloudtask takes, from the command line or
CLOUDTASK_* variables. Launched workers are tagged as cloudtask's (session 0:
no session), so `destroy-workers FILE` finds them by address, and their
addresses can be given to `cloudtask --workers=FILE`. `destroy-workers
--session=ID` destroys whatever session ID left behind.

Exit status: 0 when all were launched (destroyed); 1 on a fatal error
(bad options, an API that refuses us); 2 when some could not be.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ..addresses import parse_address
from ..argv import scan
from ..config import Config, resolve
from ..errors import CloudtaskError, ExitStatus, UsageError, error_text
from ..providers import Cloud
from ..session.cleanup import cloud_of
from ..session.fleet import destroy_addresses, launch_all, sweep_session
from ..version import __version__
from .exits import INTERRUPTED, Program, exit_status
from .main import KNOWN_OPTIONS


def parse(argv: Sequence[str], usage: str) -> tuple[Config, list[str], int | None]:
    """Options anywhere among the arguments; (config, positionals, --session)."""
    # --session is these commands' own; the rest are cloudtask's.
    parsed = scan(argv, {**KNOWN_OPTIONS, "session": "ID"}, interleaved=True)
    if parsed.help:
        print(usage)
        raise SystemExit(0)
    if parsed.version:
        print(f"cloudtask {__version__}")
        raise SystemExit(0)
    session = None
    if "session" in parsed.options:
        value = str(parsed.options.pop("session"))
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"--session: not a session id: {value!r}")
        session = int(value)
    return resolve(parsed.options), parsed.positional, session


def the_cloud(config: Config) -> Cloud:
    cloud = cloud_of(config)
    if cloud is None:
        raise UsageError("--provider: give a cloud (hub, ec2, libcloud): local launches nothing")
    return cloud


def login_key(config: Config) -> str | None:
    """The public key to authorize at boot, where the cloud can: the user's own."""
    candidates = [config.ssh_identity] if config.ssh_identity else []
    candidates += [Path("~/.ssh") / name for name in ("id_ed25519", "id_ecdsa", "id_rsa")]
    for private in candidates:
        public = Path(f"{private}.pub").expanduser()
        if public.is_file():
            return public.read_text().strip()
    return None


# -- launch ---------------------------------------------------------------------

LAUNCH_USAGE = (
    "usage: cloudtask-launch-workers [OPTIONS] N FILE|-\n\n"
    "Launch N workers and append their addresses to FILE (- for standard output).\n"
    "OPTIONS are cloudtask's provider options (cloudtask --help), from the command\n"
    "line or CLOUDTASK_* variables. Exit 0: all launched; 1: a fatal error; 2: some not."
)


def launch(argv: Sequence[str]) -> int:
    config, positional, _ = parse(argv, LAUNCH_USAGE)
    if len(positional) != 2 or not positional[0].isdigit() or int(positional[0]) < 1:
        raise UsageError("expected N (at least 1) and FILE or -", LAUNCH_USAGE.splitlines()[0])
    count, target = int(positional[0]), positional[1]
    cloud = the_cloud(config)
    results = asyncio.run(launch_all(cloud, count, login_key(config), warn))
    addresses = [result for result in results if isinstance(result, str)]
    text = "".join(f"{address}\n" for address in addresses)
    if target == "-":
        sys.stdout.write(text)
    else:
        with open(target, "a", encoding="utf-8") as out:
            out.write(text)
    failures = [result for result in results if not isinstance(result, str)]
    for failure in failures:
        warn(str(failure))
    if failures and not addresses:
        return ExitStatus.NOT_OK
    return 2 if failures else ExitStatus.OK


# -- destroy --------------------------------------------------------------------

DESTROY_USAGE = (
    "usage: cloudtask-destroy-workers [OPTIONS] FILE|- | --session=ID\n\n"
    "Destroy the workers listed in FILE (removing each destroyed address from it),\n"
    "or whatever session ID left running. OPTIONS are cloudtask's provider options\n"
    "(cloudtask --help). Exit 0: all destroyed; 1: a fatal error; 2: some not."
)


def destroy_session(config: Config, session_id: int) -> int:
    outcome = sweep_session(the_cloud(config), config.sessions, session_id, warn)
    for instance_id in outcome.destroyed:
        print(f"destroyed {instance_id}", flush=True)
    for name in outcome.left:
        warn(f"{name} may still be running")
    return 2 if outcome.left else ExitStatus.OK


def destroy(argv: Sequence[str]) -> int:
    config, positional, session_id = parse(argv, DESTROY_USAGE)
    if session_id is not None:
        if positional:
            raise UsageError("give FILE or --session, not both", DESTROY_USAGE.splitlines()[0])
        return destroy_session(config, session_id)
    if len(positional) != 1:
        raise UsageError("expected FILE or -", DESTROY_USAGE.splitlines()[0])
    source = positional[0]
    try:
        lines = (sys.stdin.read() if source == "-" else Path(source).read_text()).splitlines()
    except OSError as exc:
        raise UsageError(f"{source}: {exc.strerror or exc}") from None
    addresses = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for address in addresses:
        try:
            parse_address(address)
        except ValueError as exc:
            raise UsageError(f"{source}: {exc}") from None
    outcome = asyncio.run(destroy_addresses(the_cloud(config), addresses))
    for address, problem in outcome.items():
        if problem is None:
            print(f"destroyed {address}", flush=True)
        else:
            warn(f"{address}: {problem}")
    if source != "-":
        kept = [line for line in lines if outcome.get(line.strip(), "kept") is not None]
        temporary = Path(f"{source}.cloudtask.{os.getpid()}")
        temporary.write_text("".join(f"{line}\n" for line in kept))
        temporary.replace(source)
    return 2 if any(problem is not None for problem in outcome.values()) else ExitStatus.OK


# -- entry points -----------------------------------------------------------------


def warn(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


PROG = "cloudtask"


def _main(command: str, run: object) -> NoReturn:
    global PROG
    PROG = command
    assert callable(run)
    try:
        status = run(sys.argv[1:])
    except CloudtaskError as exc:  # bad options included: for these commands, fatal
        sys.stderr.write(error_text(PROG, exc))
        status = exit_status(Program.FLEET, exc)
    except KeyboardInterrupt:
        warn("interrupted")
        status = INTERRUPTED[Program.FLEET]
    sys.exit(int(status))


def launch_main() -> NoReturn:
    _main("cloudtask-launch-workers", launch)


def destroy_main() -> NoReturn:
    _main("cloudtask-destroy-workers", destroy)
