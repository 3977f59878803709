"""A short fuzz run over cloudtask's inputs: a few hypothesis cases per area.

The areas, the cases and the checks are the fuzzer's (this package;
`python -m tests.fuzz` runs thousands): every case runs the real command in
a subprocess, in a network namespace of its own when the kernel allows one,
and must end with exit status 0, 1 or 2, no traceback, a one-line error on
exit 2, no half-made session and nothing recorded lost. Cases are random (derandomize=False); a
failure names its seed (CLOUDTASK_FUZZ_SEED=N runs the same cases again) and
gives a shell reproducer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from tests.fuzz.areas import AREAS
from tests.fuzz.cases import Case, Template
from tests.fuzz.checks import check
from tests.fuzz.reproduce import reproducer
from tests.fuzz.safety import unsafe
from tests.fuzz.sandbox import Sandbox

# About 60 cases in all (each a subprocess): 20-30 s on 2 cores; every run
# draws new ones (a long run: python -m tests.fuzz).
EXAMPLES = {
    "input": 9,
    "options-cli": 12,
    "options-env": 8,
    "options-template": 7,
    "workers": 8,
    "sessions": 9,
    "logalyzer": 8,
}
SEED = int(os.environ.get("CLOUDTASK_FUZZ_SEED") or random.SystemRandom().getrandbits(32))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    # fast: no jobs where a cloud provider may be chosen, so nothing waits for a launch.
    with Sandbox(timeout=4.0, fast=True) as box:
        yield box


def test_every_area_is_fuzzed() -> None:
    assert set(EXAMPLES) == set(AREAS)


@pytest.mark.parametrize(
    "argv",
    [
        [b"--pre=reboot", b"true"],
        [b"--report=sh: reboot", b"true"],
        [b"--report=py: import os; os.system('x')", b"true"],
        [b"--report=py: /usr/lib/python3/dist-packages/antigravity.py", b"true"],
        [b"--workers=example.com", b"true"],
        [b"--workers=127.0.0.1:22", b"true"],
        [b"--workers=2130706433", b"true"],
        [b"--workers=/etc/hosts", b"true"],
        [b"--hub-url=https://example.com/", b"true"],
        [b"--hub-url=https://nohost.invalid\\@example.com/", b"true"],
        [b"--libcloud-driver=ec2", b"true"],
        [b"--libcloud-driver=libcloud.compute.drivers.ec2:EC2NodeDriver", b"true"],
        [b"--sessions=../x", b"true"],
        [b"--joblog=/root/x", b"true"],
        [b"--ssh-identity=~root/.ssh/id_ed25519", b"true"],
        [b"--force", b"rm", b"-rf", b"x"],
    ],
)
def test_no_case_reaches_out(argv: list[bytes]) -> None:
    """unsafe() refuses what could reach beyond the machine or the case's directory,
    from the command line, the environment and a template alike."""
    assert unsafe(Case("options-cli", "cloudtask", tuple(argv))) is not None
    name, has_value, value = argv[0].removeprefix(b"--").partition(b"=")
    if not has_value:
        return
    attr = name.decode().upper().replace("-", "_")
    env = (("CLOUDTASK_" + attr, value),)
    assert unsafe(Case("options-env", "cloudtask", (b"true",), env)) is not None
    template = Template(attrs=((attr, value.decode()),))
    assert unsafe(Case("options-template", "template", (), template=template)) is not None


# Hypothesis warns when it writes out a large case (inputs of 100 kB and more
# are some of the cases): a note about its own output, not about cloudtask.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
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
