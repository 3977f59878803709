"""Command lines split into options and positional arguments: one scanner for
cloudtask, its fleet commands and the logalyzer.

Options are GNU style long options: `--name=value`, `--name value`, or
`--name` for a flag (or for an option whose value is optional: then only
`--name=value` gives one); a flag may have a short form of its own (`-0`);
`-h`/`--help` and `--version` everywhere; `--` ends the options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .config import suggest
from .errors import UsageError

# Options GNU parallel and xargs users type, and what cloudtask has instead.
FOREIGN = {
    "-j": "--split=N, jobs at once",
    "--jobs": "--split=N, jobs at once",
    "-P": "--split=N, jobs at once",
    "--max-procs": "--split=N, jobs at once",
    "-S": "--workers=LIST",
    "--sshlogin": "--workers=LIST",
    "-a": "standard input: cloudtask COMMAND < FILE",
    "--arg-file": "standard input: cloudtask COMMAND < FILE",
    "-I": "--replace=STR",
    "-i": "--replace",
}


def foreign(arg: str) -> str:
    """What cloudtask has for a GNU parallel or xargs option (`-j4`, `--jobs=4`), or ""."""
    name = arg.partition("=")[0]
    for option, ours in FOREIGN.items():
        if name == option or (len(option) == 2 and name.startswith(option)):
            return f" (as in GNU parallel or xargs; here: {ours})"
    return ""


@dataclass
class Argv:
    """The command line split into options and positional arguments."""

    options: dict[str, str | bool] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)
    help: bool = False
    version: bool = False


def scan(
    argv: Sequence[str],
    known: Mapping[str, str | None],
    *,
    interleaved: bool,
    short: Mapping[str, str] | None = None,
    bare: Mapping[str, str] | None = None,
) -> Argv:
    """Split argv by `known` (option name: its metavar, None for a flag).

    `interleaved`: options may follow positional arguments (the fleet commands,
    the logalyzer); otherwise the first positional argument ends the options
    (cloudtask: everything after it is the job's command, options included).
    `short`: one-letter forms of flags (`-0`: `null`); `bare`: options whose
    value is optional, and their value when `--NAME` comes alone.
    """
    short = short or {}
    bare = bare or {}
    parsed = Argv()
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            parsed.positional += args[index:]
            return parsed
        if arg in ("-h", "--help"):
            parsed.help = True
            continue
        if arg == "--version":
            parsed.version = True
            continue
        flag, has_value, _ = arg.partition("=")
        if has_value and flag in ("-h", "--help", "--version"):
            raise UsageError(f"{flag} takes no value")
        if not arg.startswith("-") or arg == "-":
            if not interleaved:
                parsed.positional += args[index - 1 :]
                return parsed
            parsed.positional.append(arg)
            continue
        if flag in short:
            if has_value:
                raise UsageError(f"{flag} takes no value")
            parsed.options[short[flag]] = True
            continue
        if not arg.startswith("--"):
            raise UsageError(f"unknown option {arg}{foreign(arg)}")
        name, has_value, value = arg[2:].partition("=")
        if name not in known:
            hint = foreign(arg) or suggest(name, list(known)).replace("mean ", "mean --")
            raise UsageError(f"unknown option --{name}{hint}")
        metavar = known[name]
        if metavar is None:
            if has_value:
                raise UsageError(f"--{name} takes no value")
            parsed.options[name] = True
            continue
        if not has_value and name in bare:
            value = bare[name]
        elif not has_value:
            if index >= len(args):
                raise UsageError(f"--{name} needs a value ({metavar})")
            value = args[index]
            index += 1
        parsed.options[name] = value
    return parsed
