"""Transports run one command on a worker and stream its output.

A transport knows nothing about jobs or sessions: it runs a shell command in
a process group of its own with no input, streams what it prints, and kills
every process of the group when the command ends, times out or is stopped.
"""

from .base import AgentStart, RunResult, Transport

__all__ = ["AgentStart", "RunResult", "Transport"]
