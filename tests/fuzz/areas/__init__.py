"""The areas: one hypothesis strategy of whole cases each (AREAS), safe cases only."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st
from tests.fuzz.areas.input import input_cases
from tests.fuzz.areas.logalyzer import logalyzer_cases
from tests.fuzz.areas.options import cli_cases, env_cases, template_cases
from tests.fuzz.areas.sessions import session_cases
from tests.fuzz.areas.workers import workers_cases
from tests.fuzz.cases import Case
from tests.fuzz.safety import cloudish, unsafe


@st.composite
def fewer_cloud_runs(draw: st.DrawFn, cases: st.SearchStrategy[Case]) -> Case:
    """One case in four that may launch cloud workers keeps its jobs (each costs seconds)."""
    case = draw(cases.filter(lambda case: unsafe(case) is None))
    if case.stdin and cloudish(case) and draw(st.integers(0, 3)) != 0:
        case = replace(case, stdin=b"")
    return case


AREAS: dict[str, st.SearchStrategy[Case]] = {
    "input": input_cases(),
    "options-cli": fewer_cloud_runs(cli_cases()),
    "options-env": fewer_cloud_runs(env_cases()),
    "options-template": fewer_cloud_runs(template_cases()),
    "workers": fewer_cloud_runs(workers_cases()),
    "sessions": session_cases().filter(lambda case: unsafe(case) is None),
    "logalyzer": logalyzer_cases().filter(lambda case: unsafe(case) is None),
}
