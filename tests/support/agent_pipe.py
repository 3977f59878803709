"""A worker agent on this machine over pipes, as it runs over an SSH channel.

The agent program is started exactly as on a worker (python3 -c reading its
source from its input) and driven by the controller's AgentLink; only the
channel is a pair of pipes.
"""

from __future__ import annotations

import asyncio
import json
import shlex

from cloudtask.transport import agent, agent_program
from cloudtask.transport.agent import AgentLink


class PipeProcess:
    """An asyncio subprocess shaped like the asyncssh process AgentLink drives."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.stderr = process.stderr
        self.exit_status: int | None = None

    async def wait_closed(self) -> None:
        self.exit_status = await self.process.wait()

    def close(self) -> None:
        if self.process.returncode is None:
            assert self.stdin is not None
            self.stdin.close()


async def start_link() -> AgentLink:
    source = agent._source()
    script = f"exec python3 -c {shlex.quote(agent._BOOT)} {len(source)}"
    process = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", script, stdin=-1, stdout=-1, stderr=-1
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(source)
    header = await process.stdout.readexactly(agent_program.HEADER.size)
    kind, _, length = agent_program.HEADER.unpack(header)
    assert kind == agent_program.HELLO
    hello = await process.stdout.readexactly(length)
    link = AgentLink(PipeProcess(process), int(json.loads(hello)["cpus"]), lambda: None)
    link.listen()
    return link
