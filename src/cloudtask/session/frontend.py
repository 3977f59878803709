"""What a session needs from whoever started it: the command line, or a program
through the API. Light on purpose: a program imports it before it knows
whether anything will run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Config
from ..console import Console

if TYPE_CHECKING:
    from ..providers.base import Provider
    from ..store import Store


@dataclass(frozen=True)
class Frontend:
    """What a session needs from whoever started it: the command line, or a
    program through the API."""

    console: Console
    # A line said outside a run (no session log yet), on stdout at once.
    say: Callable[[str], None]
    # Where the jobs run, given as an object (the API's `provider=`; a test's
    # scripted provider): then it is the only source of workers.
    provider: Provider | None = None
    # Asked once a new session is checked, before it runs: raises to refuse it.
    confirm: Callable[[Config, Store, int, int], None] | None = None
    # From here to the end nothing can be interrupted (the summary is written).
    last_stretch: Callable[[], None] = lambda: None
