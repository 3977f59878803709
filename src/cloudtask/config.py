"""The one option table, and the immutable Config built from it.

Every option is declared once, in OPTIONS. From each entry come its command
line flag (--ssh-identity), its environment variable (CLOUDTASK_SSH_IDENTITY),
its template attribute (SSH_IDENTITY), its default, its help text and the
parser that validates its value. Precedence, highest first: command line,
template attribute, environment variable, default.
"""

from __future__ import annotations

import difflib
import errno
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import environment
from .addresses import Address, read_addresses
from .environment import SECRET_NAMES
from .errors import UsageError
from .halt import Halt
from .paths import named_file, os_reason, user_path

if TYPE_CHECKING:
    from .jobs import Mode

ENV_PREFIX = "CLOUDTASK_"

# Where an option's behaviour is not built yet; giving the option says so.
SESSIONS = "durable sessions"


# -- value parsers: str -> value, ValueError with a reason when bad ----------


def whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


# A duration's unit, as in `sleep`: seconds unless it says otherwise.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


AUTO = "auto"  # --slots=auto: as many jobs at once as the worker has CPUs


def slots(text: str) -> int | str:
    """Jobs at once on each worker: a whole number, or auto (its CPU count)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return whole(1)(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (or auto: the worker's CPU count)") from None


def seconds(text: str) -> float:
    """A positive duration: seconds (`90`, `1.5`), or with a unit (`90s`, `15m`, `2h`, `1d`)."""
    value = _duration(text, "")
    if value == 0:
        raise ValueError(f"must be a positive duration, got {text.strip()}")
    return value


# How a time limit of 0 (none) is shown and stored; it is read back as such.
NO_LIMIT = "no limit"


def time_limit(text: str) -> float | None:
    """A duration as `seconds` reads it, or 0 (or "no limit"): None, no limit at all."""
    if text.strip().lower() == NO_LIMIT:
        return None
    return _duration(text, ", or 0 for no limit") or None


def _duration(text: str, zero: str) -> float:
    number = text.strip()
    unit = UNITS.get(number[-1:].lower()) if number else None
    if unit is not None:
        number = number[:-1]
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"not a duration (90, 90s, 15m, 2h, 1d{zero}): {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a positive duration{zero}, got {text.strip()}")
    return value


def dollars(text: str) -> float:
    try:
        value = float(text.strip().lstrip("$"))
    except ValueError:
        raise ValueError(f"not an amount of dollars: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive amount, got {text.strip()}")
    return value


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def credential(value: str) -> str:
    """An API key: it goes into an HTTP header, so printable ASCII only.

    The reason never quotes the value: it is a secret."""
    value = text(value)
    if not all("!" <= char <= "~" for char in value):
        raise ValueError("must be printable ASCII with no spaces (is it the right value?)")
    return value


# Paths are made absolute: the session stores them, and a resume may run elsewhere.


def existing_file(value: str) -> Path:
    path = user_path(text(value))
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path.absolute()


def existing_dir(value: str) -> Path:
    path = user_path(text(value))
    if not path.is_dir():
        raise ValueError(f"no such directory: {path}")
    return path.absolute()


def private_key_file(value: str) -> Path:
    path = existing_file(value)
    import asyncssh  # only when a key is given: it is slow to import

    try:
        asyncssh.read_private_key(path)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise ValueError(
            f"{path}: not a private key SSH can use: {exc} (an encrypted key works "
            "through ssh-agent: load it there and leave --ssh-identity out)"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a private key SSH can use") from None
    return path


def output_file(value: str) -> str:
    return str(user_path(text(value)).absolute())


def directory(value: str) -> Path:
    path = user_path(text(value))
    if path.exists() and not path.is_dir():
        raise ValueError(f"not a directory: {path}")
    return path


def workers(value: str) -> tuple[Address, ...]:
    """A file of addresses, or addresses separated by blanks or commas."""
    value = text(value)
    # A value is a file only when it names one: a list of 50 addresses is
    # longer than a file name may be, and is a list all the same.
    if named_file(value) is None and "/" in value:  # no address has a slash: a path
        path = user_path(value)
        try:
            path.stat()
        except OSError as exc:  # missing, a name too long, no access: say which
            if exc.errno == errno.ENOENT:
                raise ValueError(f"no such file: {path}") from None
            raise ValueError(os_reason(exc, path)) from None
        raise ValueError(f"not a file: {path}")
    try:
        return tuple(read_addresses(value))
    except OSError as exc:
        raise ValueError(f"cannot read {os_reason(exc, value)}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {value}: not UTF-8 text") from None


def halt(value: str) -> str:
    return str(Halt.parse(value))


def report_hook(value: str) -> str:
    """A --report hook, checked now (a bad one is refused before anything runs)."""
    from .report.hooks.parse import parse_hook

    return str(parse_hook(value))


def provider(value: str) -> str:
    from .providers.registry import provider_names

    name = value.strip()
    if name not in (names := provider_names()):
        raise ValueError(f"unknown provider {name!r}; valid: {', '.join(names)}")
    return name


# -- the table ---------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    parse: Callable[[str], Any] = text
    default: Any = None
    default_help: str | None = None  # how --help states a derived default
    metavar: str = "VALUE"
    flag: bool = False  # takes no value: given means true
    relative_to_template: bool = False  # a relative path in a template is beside it
    short: str | None = None  # a flag's one-letter form on the command line (-0)
    bare: str | None = None  # the value of --NAME given without one (--replace: {})

    @property
    def secret(self) -> bool:
        """Masked when shown, never stored: the variables environment.py hides."""
        return self.env in SECRET_NAMES

    @property
    def attr(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr

    @property
    def flag_name(self) -> str:
        return "--" + self.name


OPTION = "cloudtask.option"  # a Config field's metadata key for its table entry


def option(
    help: str, parse: Callable[[str], Any] = text, *, default: Any = None, **table: Any
) -> Any:
    """A Config field that is an option: its default, and its entry in the
    option table (the other fields of Option: metavar, flag, short, ...)."""
    entry = {"help": help, "parse": parse, "default": default, **table}
    return field(default=default, metadata={OPTION: entry})


@dataclass(frozen=True)
class Config:
    """Every option's effective value, and where each came from.

    Each field that is an option is declared here once, with its table entry
    (`option()`): OPTIONS, --help, the CLOUDTASK_* variables and template
    attributes all come from these fields, in this order.
    """

    split: int | None = option(
        "number of workers running jobs in parallel (capped at the number of jobs)",
        whole(1),
        default_help="the number of --workers; else, on the local provider, the CPUs this "
        "process may use; else 1",
        metavar="N",
    )
    slots: int | str = option(
        "jobs each worker runs at once: a number, or auto for the worker's CPU count",
        slots,
        default=1,
        metavar="N|auto",
    )
    workers: tuple[Address, ...] | None = option(
        "pre-launched workers: a file with one address per line, or addresses "
        "separated by spaces or commas (user@host:port)",
        workers,
        metavar="LIST",
    )
    timeout: float | None = option(
        "per-job time limit; on expiry every process of the job is killed; 0: no limit",
        time_limit,
        default=3600.0,
        metavar="DURATION",
    )  # None: no limit (--timeout=0)
    retries: int = option(
        "times a failed or timed-out job is queued again", whole(0), default=0, metavar="N"
    )
    strikes: int = option(
        "consecutive failures after which a worker is retired; 0: never",
        whole(0),
        default=0,
        metavar="N",
    )
    user: str = option(
        "login user on workers, after an address's own user@ and before ~/.ssh/config's User",
        text,
        default="root",
        metavar="NAME",
    )
    keepalive: float = option(
        "time between liveness checks of a worker; after 3 unanswered it is failed",
        seconds,
        default=5.0,
        metavar="DURATION",
    )
    connect_timeout: float = option(
        "time to wait for a worker's SSH connection and login before it is failed",
        seconds,
        default=30.0,
        metavar="DURATION",
    )
    boot_timeout: float = option(
        "how long a launched worker may take to run and answer SSH before it is destroyed",
        seconds,
        default=600.0,
        metavar="DURATION",
    )
    lease: float = option(
        "a launched worker ends itself (its cloud terminates it on shutdown) unless "
        "cloudtask renews this lease in time: a backstop for a controller that is gone",
        seconds,
        default=600.0,
        default_help="10m",
        metavar="DURATION",
    )
    pre: str | None = option("setup command run on each worker before its first job", metavar="CMD")
    post: str | None = option(
        "cleanup command run on each worker after its last job", metavar="CMD"
    )
    overlay: Path | None = option(
        "directory copied onto each worker's root file system at setup",
        existing_dir,
        metavar="DIR",
        relative_to_template=True,
    )
    ssh_identity: Path | None = option(
        "private key for the first login (else ssh-agent, default keys)",
        private_key_file,
        metavar="FILE",
    )
    sessions: Path = option(
        "directory where sessions are kept",
        directory,
        default=Path("~/.cloudtask"),
        metavar="DIR",
        relative_to_template=True,
    )
    resume: int | None = option("resume the unfinished jobs of session ID", whole(1), metavar="ID")
    retry: int | None = option(
        "run the failed jobs of session ID again, then the unfinished ones", whole(1), metavar="ID"
    )
    force: bool = option("do not ask for confirmation", flag=True, default=False)
    dry_run: bool = option(
        "print each job's command line, in input order, and exit: nothing runs",
        flag=True,
        default=False,
    )
    lines: bool = option(
        "each input line, as it is, is one argument (no quote processing; no line is skipped)",
        flag=True,
        default=False,
    )
    null: bool = option(
        "input records end with a NUL byte (find -print0); each, as it is, is one argument",
        flag=True,
        default=False,
        short="-0",
    )
    replace: str | None = option(
        "the job's arguments replace every STR in the command ({} if given alone), "
        "instead of being appended",
        metavar="STR",
        bare="{}",
    )
    report: str | None = option(
        "hook run when the session ends: 'mail: FROM TO...', 'sh: CMD', 'py: CODE|FILE'",
        report_hook,
        metavar="HOOK",
    )
    provider: str = option(
        "what launches workers: local, hub, ec2, libcloud",
        provider,
        default_help="hub when a Hub API key is set, else local",
        metavar="NAME",
        default="local",
    )
    hub_apikey: str | None = option("TurnKey Hub API key", credential, metavar="KEY")
    hub_url: str | None = option("TurnKey Hub API base URL", metavar="URL")
    backup_id: str | None = option("TKLBAM backup restored on each launched worker", metavar="ID")
    snapshot_id: str | None = option("snapshot launched workers start from", metavar="ID")
    ami_id: str | None = option("AMI launched workers start from", metavar="ID")
    ec2_region: str | None = option("region launched workers run in", metavar="REGION")
    ec2_size: str | None = option("size (instance type) of launched workers", metavar="SIZE")
    ec2_type: str | None = option("hub: s3 or ebs backed; ec2: spot or on-demand", metavar="TYPE")
    ec2_subnet: str | None = option("ec2: subnet id launched workers join", metavar="ID")
    ec2_security_group: str | None = option(
        "ec2: security group ids of launched workers (comma-separated)", metavar="IDS"
    )
    libcloud_driver: str | None = option(
        "libcloud: the compute driver's name (digitalocean, linode, gce, openstack, ...)",
        metavar="NAME",
    )
    libcloud_key: str | None = option("libcloud: the driver's key (user or token)", metavar="KEY")
    libcloud_secret: str | None = option(
        "libcloud: the driver's secret, where it takes one", metavar="SECRET"
    )
    libcloud_options: str | None = option(
        "libcloud: more driver arguments, NAME=VALUE separated by commas (region=...); "
        "secret, as they may hold tokens",
        metavar="LIST",
    )
    libcloud_image: str | None = option(
        "libcloud: image id launched workers start from", metavar="ID"
    )
    libcloud_size: str | None = option("libcloud: size id of launched workers", metavar="ID")
    libcloud_location: str | None = option(
        "libcloud: location id launched workers run in", metavar="ID"
    )
    hourly_price: float | None = option(
        "price per hour of one launched worker, instead of the shipped price table",
        dollars,
        metavar="DOLLARS",
    )
    joblog: str | None = option(
        "also write a per-job log in GNU parallel's --joblog format", output_file, metavar="FILE"
    )
    halt: str | None = option(
        "stop early: [now|soon,](fail|success|done)=(N|P%), GNU parallel's grammar; "
        "soon (the default) lets running jobs finish, now stops them (pending again); "
        "fail counts jobs not ok, success ok ones, done both; P% is of the jobs "
        "finished, from 3 on",
        halt,
        metavar="SPEC",
    )
    budget: float | None = option(
        "stop launching, and drain, when the projected cost of launched workers would pass DOLLARS",
        dollars,
        metavar="DOLLARS",
    )
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def value(self, option: Option) -> Any:
        return getattr(self, option.attr.lower())

    def shown(self, masked: bool = True) -> list[tuple[str, str, str]]:
        """(option, value, source) for every option with a value, as text the
        option parses back (a flag as True); secrets masked unless not `masked`."""
        rows = []
        for option in OPTIONS:
            value = self.value(option)
            # None is no value, but for --timeout=0 (no limit), given as such.
            if (value is None and option.name not in self.sources) or (option.flag and not value):
                continue
            shown = "********" if option.secret and masked else shown_value(value)
            rows.append((option.name, shown, self.sources.get(option.name, "default")))
        return rows

    @property
    def input_mode(self) -> Mode:
        """How the input becomes jobs: POSIX words, whole lines, or NUL records."""
        return "null" if self.null else "lines" if self.lines else "words"

    def given(self, secrets: bool = False) -> dict[str, str]:
        """The options given (not the defaults, so that the environment of a
        later run still counts), as text: what a session stores (never a
        secret) and what the watchdog is sent (secrets too). What only this
        invocation means is left out."""
        return {
            name: text
            for name, text, source in self.shown(masked=False)
            if source != "default"
            and name not in INVOCATION_ONLY
            and (secrets or not BY_NAME[name].secret)
        }


OPTIONS: tuple[Option, ...] = tuple(
    Option(entry.name.replace("_", "-"), **entry.metadata[OPTION])
    for entry in fields(Config)
    if OPTION in entry.metadata
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}

# Options that mean something to one invocation only: never stored nor passed on.
INVOCATION_ONLY = frozenset({"force", "dry-run", "resume", "retry"})

# The runs an option acts on (any other option acts on every run): "ssh" when
# there are SSH workers (listed or launched), "launch" when servers are
# launched, and a provider's name when it is the one launching them.
_SSH, _LAUNCH = frozenset({"ssh"}), frozenset({"launch"})
ONLY_FOR: dict[str, frozenset[str]] = {
    "user": _SSH,
    "keepalive": _SSH,
    "connect-timeout": _SSH,
    "ssh-identity": _SSH,
    "overlay": _SSH,
    "boot-timeout": _LAUNCH,
    "lease": _LAUNCH,
    "hourly-price": _LAUNCH,
    "budget": _LAUNCH,
    "hub-apikey": frozenset({"hub"}),
    "hub-url": frozenset({"hub"}),
    "backup-id": frozenset({"hub"}),
    "snapshot-id": frozenset({"hub"}),
    "ami-id": frozenset({"hub", "ec2"}),
    "ec2-region": frozenset({"hub", "ec2"}),
    "ec2-size": frozenset({"hub", "ec2"}),
    "ec2-type": frozenset({"hub", "ec2"}),
    "ec2-subnet": frozenset({"ec2"}),
    "ec2-security-group": frozenset({"ec2"}),
    **{
        option.name: frozenset({"libcloud"})
        for option in OPTIONS
        if option.name.startswith("libcloud-")
    },
}


def pointless_options(config: Config, kinds: set[str]) -> list[str]:
    """The options given on the command line or in a template that act on none
    of these kinds of run (see ONLY_FOR); the environment's are left alone,
    as settings kept for other runs."""
    return [
        f"--{name}"
        for name, source in config.sources.items()
        if source in ("command line", "template")
        and name in ONLY_FOR
        and not ONLY_FOR[name] & kinds
    ]


BY_ATTR: dict[str, Option] = {option.attr: option for option in OPTIONS}

# Template attributes that are not options.
TEMPLATE_ONLY = frozenset({"DESCRIPTION", "COMMAND"})


def suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# -- the resolved configuration ----------------------------------------------


def shown_value(value: object) -> str:
    if value is None:
        return NO_LIMIT
    if isinstance(value, tuple):
        return " ".join(str(item) for item in value)
    return str(value)


@dataclass(frozen=True)
class TemplateValues:
    """A task template's option attributes, and the file they are relative to.

    A resumed session's stored options come in the same way; `stored_in`
    names the session store, for errors."""

    values: Mapping[str, object]
    path: Path | None
    stored_in: Path | None = None


def template_text(option: Option, value: object) -> str:
    """A template attribute's Python value as the text the option parses."""
    if option.flag:
        if not isinstance(value, bool):
            raise ValueError(f"must be True or False, got {value!r}")
        return "1" if value else ""
    if isinstance(value, bool):
        raise ValueError(f"must not be True or False, got {value!r}")
    if isinstance(value, str | int | float | Path):
        return str(value)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    raise ValueError(f"unsupported value {value!r}")


def env_flag(value: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false or yes/no, got {value!r}")


def resolve(
    cli: Mapping[str, str | bool],
    template: TemplateValues | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """One Config from the command line, a template, the environment and defaults.

    `cli` maps option names to the text given (or True for a flag). Every value
    is validated here; a bad one raises UsageError naming where it came from.
    """
    environ = environment.full() if environ is None else environ
    template_values = template.values if template else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        key = option.attr.lower()
        if option.name in cli:
            values[key] = _parse_cli(option, cli[option.name])
            sources[option.name] = "command line"
        elif option.attr in template_values:
            assert template is not None
            values[key] = _parse_template(option, template_values[option.attr], template)
            sources[option.name] = "template"
        elif option.env in environ:
            values[key] = _parse(option, environ[option.env], option.env, env=True)
            sources[option.name] = "environment"
        elif option.default is not None:
            values[key] = option.default
    try:
        values["sessions"] = user_path(str(values["sessions"]))
    except ValueError as exc:
        raise UsageError(f"--sessions: {exc}") from None
    if "provider" not in sources:
        values["provider"] = "hub" if values.get("hub_apikey") else "local"
    one_input_mode(values, sources)
    return Config(**values, sources=sources)


LAYERS = ("command line", "template", "environment")


def one_input_mode(values: dict[str, Any], sources: dict[str, str]) -> None:
    """--lines and --null from different layers: the higher one wins; from one, refused."""
    if not (values.get("lines") and values.get("null")):
        return
    lines, null = sources["lines"], sources["null"]
    if lines == null:
        raise UsageError(f"--lines and --null ({lines}): give one of them")
    lower = "null" if LAYERS.index(lines) < LAYERS.index(null) else "lines"
    values[lower] = False
    del sources[lower]


def _parse(option: Option, raw: str, where: str, *, env: bool = False) -> Any:
    try:
        if "\0" in raw:  # a template's string may hold one; no path or command can
            raise ValueError("must not contain a NUL byte")
        if option.flag:
            return env_flag(raw) if env else bool(raw)
        return option.parse(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    except OSError as exc:  # a path the system refuses to look at: too long, no access
        raise UsageError(f"{where}: {os_reason(exc)}") from None


def _parse_cli(option: Option, raw: str | bool) -> Any:
    if option.flag:
        return bool(raw)
    assert isinstance(raw, str)
    return _parse(option, raw, option.flag_name)


def _parse_template(option: Option, raw: object, template: TemplateValues) -> Any:
    path = template.path
    if template.stored_in is not None:
        where = f"{option.flag_name} as stored in {template.stored_in}"
    else:
        where = f"template attribute {option.attr}" + (f" ({path})" if path else "")
    try:
        raw_text = template_text(option, raw)
    except ValueError as exc:
        # The reason quotes the value: never a secret's.
        reason = f"unsupported type {type(raw).__name__}" if option.secret else str(exc)
        raise UsageError(f"{where}: {reason}") from None
    if option.relative_to_template and path is not None:
        try:
            candidate = user_path(raw_text)
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if not candidate.is_absolute():
            raw_text = str(path.parent / candidate)
    return _parse(option, raw_text, where)


def check_combinations(config: Config) -> None:
    """Refuse options that are valid alone but not together."""
    if config.workers:
        cloud = config.provider != "local"
        if config.split is not None and config.split > len(config.workers) and not cloud:
            raise UsageError(
                f"--split={config.split} is more than the {len(config.workers)} --workers "
                "given: give a --provider that launches the rest (hub, ec2, libcloud)"
            )
    elif config.overlay is not None and config.provider == "local":
        raise UsageError(
            "--overlay: the local provider does not copy an overlay onto this machine; "
            "give --workers"
        )


def config_field_names() -> set[str]:
    return {f.name for f in fields(Config)} - {"sources"}
