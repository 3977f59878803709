"""cloudtask's worker agent: runs the jobs a controller sends it, several at once.

This file is sent over SSH and run as `python3 -c` on the worker: it must
need nothing but the standard library of Python 3.6 and write nothing it
does not remove (only a lease, when asked for one, outlives it; see below).
The controller imports it for its constants alone.

Messages both ways are frames: a header (a kind byte, a message id, the
payload's length) and the payload. Control payloads are JSON; output is the
bytes as the job wrote them, so nothing is escaped. The controller numbers
each command it sends (RUN); the agent's frames about it carry that number.

Each job runs as `/bin/sh -c COMMAND` in a session of its own (a process
group the agent can signal whole) with stdin from /dev/null. When it exits,
whatever else is left in its group is killed, its output is read to the end
(for at most DRAIN_LIMIT seconds: a process that left the group can hold it
open for ever), and EXIT reports its status or signal and `wait4`'s resource
use. When the agent's input ends (the controller closed the channel, or the
connection is gone) it kills every group it started and exits.

A lease (LEASE) is a detached keeper process, in a session of its own so the
end of the channel does not touch it. It reads its deadline from a file the
agent rewrites on each renewal; past the deadline it runs the lease's action
(on a cloud worker, a shutdown that terminates the instance). Only a lease
with no seconds left (a cancel) removes it.
"""

import errno
import json
import os
import select
import selectors
import signal
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

HEADER = struct.Struct(">cII")  # kind, message id, payload length
# controller -> agent
RUN = b"R"  # JSON {"command": str, "env": {name: value}}
SIGNAL = b"S"  # a signal's name (TERM, KILL, ...) for the message's job group
LEASE = b"L"  # JSON {"seconds": float, "action": str, "key": str}; seconds <= 0 cancels
SPOT = b"P"  # JSON {"url": str, "interval": float}: watch for a spot interruption notice
# agent -> controller
HELLO = b"H"  # JSON {"cpus": int, "python": str, "pid": int}
STDOUT = b"O"  # bytes a job wrote to its stdout
STDERR = b"E"  # bytes a job wrote to its stderr
EXIT = b"X"  # JSON {"status", "signal", "user_cpu", "system_cpu", "max_rss", "held_open"}
NOTICE = b"N"  # the spot interruption notice as the metadata service gave it
PROBLEM = b"W"  # a line saying what the agent could not do (a lease, a signal)

READ_SIZE = 65536
DRAIN_LIMIT = 2.0  # seconds a job's output is still read once it has exited
LEASE_PREFIX = "cloudtask-lease-"
LEASE_POLL = 1.0  # seconds between the keeper's looks at its deadline


class Job:
    def __init__(self, number: int, pid: int) -> None:
        self.number = number
        self.pid = pid  # also its process group's id: it leads a session of its own
        self.streams: Dict[int, bytes] = {}  # open output fd -> its frame kind
        self.ended: Optional[Tuple[int, Any]] = None  # wait4's status and rusage
        self.ended_at = 0.0


class Agent:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.jobs: Dict[int, Job] = {}  # by message id
        self.by_pid: Dict[int, Job] = {}
        self.by_fd: Dict[int, Job] = {}
        self.pending = bytearray()  # frames not written yet
        self.input = bytearray()
        self.write_lock = threading.Lock()  # the spot watcher writes from its thread
        self.base_env = dict(os.environ)
        self.wake_write = -1

    # -- frames --------------------------------------------------------------

    def send(self, kind: bytes, number: int, payload: bytes) -> None:
        with self.write_lock:
            self.pending += HEADER.pack(kind, number, len(payload))
            self.pending += payload

    def send_json(self, kind: bytes, number: int, value: Any) -> None:
        self.send(kind, number, json.dumps(value).encode())

    def flush(self) -> None:
        with self.write_lock:
            data, self.pending = bytes(self.pending), bytearray()
        view = memoryview(data)
        while view:
            try:
                written = os.write(1, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                # Output and input may be one socket (sshd's socketpair), made
                # non-blocking for the input: wait until the channel takes more.
                select.select([], [1], [])
                continue
            except OSError:
                self.quit()  # the controller is gone
            view = view[written:]

    # -- the loop ------------------------------------------------------------

    def main(self) -> None:
        wake_read, self.wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda number, frame: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a lost controller is an OSError
        os.set_blocking(0, False)
        self.selector.register(0, selectors.EVENT_READ, "input")
        self.selector.register(wake_read, selectors.EVENT_READ, "wake")
        self.send_json(
            HELLO, 0, {"cpus": cpu_count(), "python": sys.version.split()[0], "pid": os.getpid()}
        )
        while True:
            self.flush()
            timeout = self.drain_timeout()
            for key, _ in self.selector.select(timeout):
                if key.data == "input":
                    self.read_input()
                elif key.data == "wake":
                    try:
                        os.read(wake_read, 4096)
                    except OSError:
                        pass
                else:
                    self.read_output(key.fd)
            self.reap()
            self.finish_jobs()

    def drain_timeout(self) -> Optional[float]:
        """Seconds until a job's output stops being waited for, or None."""
        waits = [
            job.ended_at + DRAIN_LIMIT - time.monotonic()
            for job in self.jobs.values()
            if job.ended is not None
        ]
        return max(0.0, min(waits)) if waits else None

    def read_input(self) -> None:
        try:
            data = os.read(0, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.quit()
        self.input += data
        while len(self.input) >= HEADER.size:
            kind, number, length = HEADER.unpack_from(self.input)
            if len(self.input) < HEADER.size + length:
                return
            payload = bytes(self.input[HEADER.size : HEADER.size + length])
            del self.input[: HEADER.size + length]
            self.handle(kind, number, payload)

    def handle(self, kind: bytes, number: int, payload: bytes) -> None:
        if kind == RUN:
            self.start(number, json.loads(payload.decode("utf-8", "surrogatepass")))
        elif kind == SIGNAL:
            job = self.jobs.get(number)
            if job is not None and job.ended is None:
                kill_group(job.pid, getattr(signal, "SIG" + payload.decode(), signal.SIGKILL))
        elif kind == LEASE:
            self.lease(json.loads(payload.decode()))
        elif kind == SPOT:
            settings = json.loads(payload.decode())
            thread = threading.Thread(
                target=self.watch_spot, args=(settings["url"], settings["interval"])
            )
            thread.daemon = True
            thread.start()

    # -- jobs ----------------------------------------------------------------

    def start(self, number: int, request: Dict[str, Any]) -> None:
        env = dict(self.base_env)
        env.update(request.get("env") or {})
        try:
            pid, out, err = spawn(request["command"], env)
        except OSError as exc:
            self.send(STDERR, number, ("cloudtask agent: cannot start: %s\n" % exc).encode())
            self.send_json(EXIT, number, {"status": 127, "signal": None})
            return
        job = Job(number, pid)
        self.jobs[number] = job
        self.by_pid[pid] = job
        for fd, kind in ((out, STDOUT), (err, STDERR)):
            os.set_blocking(fd, False)
            job.streams[fd] = kind
            self.by_fd[fd] = job
            self.selector.register(fd, selectors.EVENT_READ, "output")

    def read_output(self, fd: int) -> None:
        """Read what the job wrote, and its end of file if it is there already:
        a short job's output, its end and its exit then go out in one write."""
        job = self.by_fd.get(fd)
        if job is None:
            return
        for _ in range(2):  # at most READ_SIZE more: a loud job cannot starve the others
            try:
                data = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.close_stream(job, fd)
                return
            self.send(job.streams[fd], job.number, data)

    def close_stream(self, job: Job, fd: int) -> None:
        self.selector.unregister(fd)
        del job.streams[fd]
        del self.by_fd[fd]
        os.close(fd)

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            job = self.by_pid.pop(pid, None)
            if job is None:
                continue  # a lease keeper's first fork
            job.ended = (status, usage)
            job.ended_at = time.monotonic()
            # Nothing the job started outlives it (the channel-per-job wrapper's rule).
            kill_group(job.pid, signal.SIGKILL)

    def finish_jobs(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.ended is None:
                continue
            held_open = bool(job.streams)
            if held_open and now < job.ended_at + DRAIN_LIMIT:
                continue
            for fd in list(job.streams):
                self.close_stream(job, fd)
            status, usage = job.ended
            report = {
                "status": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "user_cpu": usage.ru_utime,
                "system_cpu": usage.ru_stime,
                "max_rss": usage.ru_maxrss * 1024,  # KiB on Linux
                "held_open": held_open,
            }
            self.send_json(EXIT, job.number, report)
            del self.jobs[job.number]

    def quit(self) -> None:
        """The controller is gone or done: kill every job group, then exit."""
        for job in self.jobs.values():
            if job.ended is None:
                kill_group(job.pid, signal.SIGKILL)
        os._exit(0)

    # -- the lease -----------------------------------------------------------

    def lease(self, request: Dict[str, Any]) -> None:
        key = "".join(c for c in str(request["key"]) if c.isalnum() or c in "._-")
        directory = os.path.join("/tmp", LEASE_PREFIX + key)
        deadline_file = os.path.join(directory, "deadline")
        seconds = float(request["seconds"])
        try:
            if seconds <= 0:
                cancel_lease(directory)
                return
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o700)
            write_atomically(deadline_file, repr(time.monotonic() + seconds))
            if not keeper_alive(directory):
                start_keeper(directory, str(request["action"]))
        except OSError as exc:
            self.send(PROBLEM, 0, ("cannot keep the lease in %s: %s" % (directory, exc)).encode())

    # -- spot notices --------------------------------------------------------

    def watch_spot(self, url: str, interval: float) -> None:
        """Poll the instance metadata (IMDSv2) until an interruption notice comes."""
        while True:
            notice = spot_notice(url.rstrip("/"))
            if notice is not None:
                self.send(NOTICE, 0, notice)
                try:
                    os.write(self.wake_write, b"n")  # the loop then writes the frame out
                except OSError:
                    pass
                return
            time.sleep(interval)


def spawn(command: str, env: Dict[str, str]) -> Tuple[int, int, int]:
    """Start `/bin/sh -c command` in a session of its own, stdin from
    /dev/null, stdout and stderr to pipes: its pid and the pipes' read ends.

    posix_spawn (Python 3.8 and later) costs the worker far less than a fork
    of this process; older ones fork. The job gets the default action for
    SIGPIPE, which the agent itself ignores."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    argv = ["/bin/sh", "-c", command]
    try:
        if hasattr(os, "posix_spawn") and sys.version_info >= (3, 8):
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ]
            pid = os.posix_spawn(
                argv[0], argv, env, file_actions=actions, setsid=True, setsigdef=(signal.SIGPIPE,)
            )
        else:
            pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                    os.dup2(out_write, 1)
                    os.dup2(err_write, 2)
                    os.execve(argv[0], argv, env)
                finally:
                    os._exit(127)
    except OSError:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    return pid, out_read, err_read


def spot_notice(url: str) -> Optional[bytes]:
    """The notice's body, or None while there is none (or the service does not answer)."""
    try:
        request = urllib.request.Request(
            url + "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            token = response.read().decode()
        request = urllib.request.Request(
            url + "/latest/meta-data/spot/instance-action",
            headers={"X-aws-ec2-metadata-token": token},
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            return bytes(response.read()) or b"{}"
    except (urllib.error.URLError, OSError, ValueError):
        return None  # 404: no notice yet


def kill_group(pgid: int, number: int) -> None:
    try:
        os.killpg(pgid, number)
    except (ProcessLookupError, PermissionError):
        pass


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def write_atomically(path: str, text: str) -> None:
    temporary = path + ".new"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def keeper_alive(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "keeper")) as file:
            os.kill(int(file.read()), 0)
    except (OSError, ValueError):
        return False
    return True


def cancel_lease(directory: str) -> None:
    for name in ("deadline", "keeper", "deadline.new", "keeper.new"):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def start_keeper(directory: str, action: str) -> None:
    """Fork the keeper: detached (a session of its own, not the agent's child)."""
    if os.fork() != 0:
        return  # the first child exits at once and is reaped by the agent
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1024)
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        write_atomically(os.path.join(directory, "keeper"), str(os.getpid()))
        keep_lease(directory, action)
    finally:
        os._exit(0)


def keep_lease(directory: str, action: str) -> None:
    """Sleep until the deadline passes unrenewed, then run the action; end if cancelled."""
    while True:
        try:
            with open(os.path.join(directory, "deadline")) as file:
                deadline = float(file.read())
        except (OSError, ValueError):
            return  # cancelled
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, LEASE_POLL))
    cancel_lease(directory)
    os.execv("/bin/sh", ["/bin/sh", "-c", action])


if __name__ == "__main__":
    Agent().main()
