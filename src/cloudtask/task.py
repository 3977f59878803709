"""Task templates: a Python class whose attributes are option defaults.

    from cloudtask import Task

    class Refresh(Task):
        COMMAND = "refresh-iso"
        SPLIT = 10

    Refresh.main()

A template behaves like the cloudtask command with those defaults; extra
positional arguments are appended to COMMAND. Templates inherit from each
other like any classes.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NoReturn

from .config import BY_ATTR, TEMPLATE_ONLY, TemplateValues, suggest
from .errors import ExitStatus, UsageError, error_text
from .jobs import Command, command_from
from .template import Template

if TYPE_CHECKING:
    from .session.result import SessionResult


class Task:
    DESCRIPTION: ClassVar[str | None] = None
    COMMAND: ClassVar[str | list[str] | tuple[str, ...] | None] = None

    @classmethod
    def template(cls) -> Template:
        """The template as the command line takes it."""
        path = template_path(cls)
        where = f" ({path})" if path else ""
        values: dict[str, object] = {}
        for klass in reversed(cls.__mro__):  # base classes first: subclasses override
            if klass in (Task, object):
                continue
            for attr, value in vars(klass).items():
                if not attr.isupper() or attr in TEMPLATE_ONLY:
                    continue
                if attr not in BY_ATTR:
                    raise UsageError(
                        f"template attribute {attr}{where}: unknown option"
                        + suggest(attr, [*BY_ATTR, *TEMPLATE_ONLY])
                    )
                values[attr] = value
        for attr, value in list(values.items()):
            if value is None:  # None in a subclass unsets an inherited value
                del values[attr]
        if not isinstance(cls.DESCRIPTION, str | None):
            raise UsageError(
                f"template attribute DESCRIPTION{where}: expected a string, got {cls.DESCRIPTION!r}"
            )
        return Template(
            TemplateValues(values, path), template_command(cls.COMMAND, where), cls.DESCRIPTION
        )

    @classmethod
    def run(
        cls, jobs: Iterable[str | bytes], *, echo: bool = False, **options: object
    ) -> SessionResult:
        """Run the template in this process (cloudtask.run with its command and
        its values under the options given), to the end."""
        from .api import run_template

        template = cls.template()
        if template.command is None:
            raise UsageError(f"{cls.__name__}.run: the template has no COMMAND")
        return run_template(template.command, jobs, echo, options, template.values)

    @classmethod
    def main(cls, argv: list[str] | None = None) -> NoReturn:
        """The template's own command line: cloudtask with its defaults."""
        # The one import of the command-line layer from below it: a template
        # is a program of its own.
        from .cli.main import run

        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else cls.__name__
        try:
            template = cls.template()
        except UsageError as exc:
            sys.stderr.write(error_text(prog, exc))
            sys.exit(ExitStatus.USAGE)
        sys.exit(run(sys.argv[1:] if argv is None else argv, template, prog=prog))


def template_command(command: object, where: str) -> Command | None:
    return None if command is None else command_from(command, f"template attribute COMMAND{where}")


def template_path(cls: type) -> Path | None:
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return Path(source).resolve() if source else None
