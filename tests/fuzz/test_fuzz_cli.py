"""A short fuzz run over cloudtask's inputs: a few hypothesis cases per area.

The areas, the cases and the checks are benchmarks/fuzz.py's (which runs
thousands): every case runs the real command in a subprocess, in a network
namespace of its own when the kernel allows one, and must end with exit
status 0, 1 or 2, no traceback, a one-line error on exit 2, no half-made
session and nothing recorded lost. Cases are random (derandomize=False); a
failure names its seed (CLOUDTASK_FUZZ_SEED=N runs the same cases again) and
gives a shell reproducer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from benchmarks.fuzz import AREAS, Case, Sandbox, check, reproducer
from hypothesis import HealthCheck, Phase, given, seed, settings

# About 110 cases in all (each a subprocess), well under 60 s on 2 cores.
EXAMPLES = {
    "input": 16,
    "options-cli": 22,
    "options-env": 14,
    "options-template": 12,
    "workers": 14,
    "sessions": 16,
    "logalyzer": 16,
}
SEED = int(os.environ.get("CLOUDTASK_FUZZ_SEED") or random.SystemRandom().getrandbits(32))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    # fast: no jobs where a cloud provider may be chosen, so nothing waits for a launch.
    with Sandbox(timeout=4.0, fast=True) as box:
        yield box


def test_every_area_is_fuzzed() -> None:
    assert set(EXAMPLES) == set(AREAS)


@pytest.mark.parametrize("area", sorted(EXAMPLES))
def test_fuzz(area: str, sandbox: Sandbox) -> None:
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES[area],
        deadline=None,
        derandomize=False,
        # No shrinking: each step is a subprocess; the failure gives its reproducer.
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(AREAS[area])
    def contract_holds(case: Case) -> None:
        case = sandbox.effective(case)
        result = sandbox.run(case)
        broken = [failure for failure in check(case, result) if not failure.note]
        assert not broken, "\n".join(
            [
                *(f"{failure.kind}: {failure.detail}" for failure in broken),
                f"(seed {SEED}: CLOUDTASK_FUZZ_SEED={SEED} runs these cases again)",
                "reproducer:",
                reproducer(case),
            ]
        )

    contract_holds()
