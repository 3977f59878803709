"""What a task template gives the command line: option values, its command,
its description. A leaf, so the command line and `Task` both use it without
importing each other."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TemplateValues
from .jobs import Command


@dataclass(frozen=True)
class Template:
    """A task template's contribution: option values, command, description."""

    values: TemplateValues
    command: Command | None
    description: str | None
