"""How the ``ray`` resource manager reaches its Ray driver (``detlite.ray._driver``).

``Inline``: the driver in this process (``ray.init`` here). ``Child``: the driver in a child
process, over a socket pair, one request at a time; a request not answered within its
timeout stays owed (``NoAnswer``), and its answer is read and dropped before the next
request, or by ``catch_up``; a group launched by a request whose answer came late is an
orphan, for the manager to forget. ``Gone``: the child has exited. Both kinds start with a
deadline: ``NoAnswer`` says what was still awaited when it passed, and RayConnectionError
why the driver gave up sooner (``ray.init`` raised). Nothing here imports ray at module
level: a master whose driver is a child process never imports it.

The address helpers say where a Ray address connects first (``probe_target``: the GCS, or
Ray Client's server) and whether that is loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from detlite.errors import DetliteError

__all__ = [
    "LOOPBACK_VARIABLE",
    "Child",
    "Gone",
    "Inline",
    "NoAnswer",
    "RayConnectionError",
    "is_loopback",
    "loopback_cluster",
    "probe_target",
]

logger = logging.getLogger("detlite.ray")

#: Ray reads it once, at import; 0 keeps a driver of a loopback cluster on loopback.
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_CHILD_MAIN = "import sys; from detlite.ray._driver import main; main(int(sys.argv[1]))"


class RayConnectionError(DetliteError, ConnectionError):
    """The Ray cluster could not be reached, or has no room for the group asked for."""


class NoAnswer(Exception):
    """A driver did not answer in time (the message: what was awaited)."""


class Gone(Exception):
    """A child driver has exited, or its socket is closed."""


class Inline:
    """The driver in this process."""

    def __init__(self, driver: Any, own_ray: bool) -> None:
        self.driver = driver
        self.own_ray = own_ray

    @classmethod
    def start(
        cls,
        address: str | None,
        namespace: str,
        slots: int | None,
        work_dir: Path,
        straggler_grace: float,
        deadline: float,
    ) -> tuple[Inline, int, bool]:
        if loopback_cluster(address) and LOOPBACK_VARIABLE not in os.environ:
            if "ray" in sys.modules:
                logger.warning(
                    "ray was imported before %s=0 could be set: this process may not reach "
                    "the loopback cluster at %s (set the variable before Python starts)",
                    LOOPBACK_VARIABLE,
                    address or os.environ.get("RAY_ADDRESS"),
                )
            else:
                os.environ[LOOPBACK_VARIABLE] = "0"  # read once, when ray is imported
        import ray

        from detlite.ray._driver import RayDriver, wait_for_slot

        own_ray = not ray.is_initialized()
        if own_ray:
            init_within(address, namespace, deadline)
        driver = RayDriver(slots, work_dir, straggler_grace)
        try:
            found, gpus = wait_for_slot(driver, deadline)
        except RayConnectionError as exc:
            if own_ray:
                ray.shutdown()
            raise NoAnswer(str(exc)) from None
        return cls(driver, own_ray), found, gpus

    def call(self, method: str, *args: Any, timeout: float) -> Any:
        return getattr(self.driver, method)(*args)

    def catch_up(self, timeout: float) -> bool:
        return True

    def orphans(self) -> list[str]:
        return []

    def kill(self) -> None:
        pass

    def close(self, timeout: float) -> None:
        self.driver.end_all()
        if self.own_ray:
            import ray

            ray.shutdown()


def init_within(address: str | None, namespace: str, deadline: float) -> None:
    """``ray.init`` in a thread, so that a call that hangs cannot hold this one past the
    deadline (nor past a signal): the thread is then left behind."""
    import ray

    done = threading.Event()
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            ray.init(
                address=address, namespace=namespace, log_to_driver=False, configure_logging=False
            )
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=connect, name="detlite-ray-connect", daemon=True).start()
    while not done.wait(0.2):
        if time.monotonic() > deadline:
            raise NoAnswer("ray.init did not return")
    if failure:
        raise RayConnectionError(f"ray.init failed: {failure[0]}")


class Child:
    """The driver in a child process (``detlite.ray._driver.main``), over a socket pair.

    One request at a time. A request not answered within its timeout stays owed: its
    answer is read (and dropped) before the next request is sent, or by ``catch_up``."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self._lock = threading.Lock()
        self._next_id = 0
        self._waiting: tuple[int, str] | None = None
        self._orphans: list[str] = []

    @classmethod
    def start(
        cls,
        settings: dict[str, Any],
        env: dict[str, str],
        deadline: float,
        halt: threading.Event | None,
    ) -> tuple[Child, int, bool]:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        child = cls(process, Connection(ours.detach()))
        try:
            child.conn.send(settings)
            waiting_for = "the driver process did not start"
            while True:
                if halt is not None and halt.is_set():
                    raise NoAnswer("the manager is closing")
                if child.conn.poll(0.2):
                    message = child.conn.recv()
                    if message[0] == "note":
                        waiting_for = message[1]
                    elif message[0] == "ready":
                        return child, int(message[1]), bool(message[2])
                    elif message[0] == "refused":
                        raise RayConnectionError(message[1])
                    else:
                        raise NoAnswer(message[1])
                elif process.poll() is not None:
                    raise NoAnswer(f"its driver process exited with code {process.returncode}")
                if time.monotonic() > deadline:
                    raise NoAnswer(waiting_for)
        except RayConnectionError:
            child.kill()
            raise
        except (EOFError, OSError) as exc:  # its socket (RayConnectionError is an OSError too)
            child.kill()
            raise NoAnswer(f"its driver process ended ({exc or type(exc).__name__})") from None
        except BaseException:
            child.kill()  # a timeout, or a signal (SIGTERM while connecting)
            raise

    def _gone(self, exc: BaseException | None = None) -> Gone:
        # Its end of the socket closes as it exits: give the exit a moment to be seen.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
        code = self.process.poll()
        if code is not None:
            return Gone(f"its driver process exited with code {code}")
        return Gone(f"its driver process closed its connection ({exc or type(exc).__name__})")

    def _read(self, timeout: float) -> tuple[Any, ...] | None:
        """The owed answer, or None if it does not come within ``timeout``."""
        assert self._waiting is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                    if self.process.poll() is not None:
                        raise self._gone()
                    return None
                reply: tuple[Any, ...] = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise self._gone(exc) from None
            if reply[0] == self._waiting[0]:
                return reply

    def call(self, method: str, *args: Any, timeout: float) -> Any:
        with self._lock:
            if self._waiting is not None:
                late = self._read(0)
                if late is None:
                    raise NoAnswer
                self._settle(late)
            self._next_id += 1
            self._waiting = (self._next_id, method)
            try:
                self.conn.send((self._next_id, method, args))
            except (OSError, ValueError) as exc:
                raise self._gone(exc) from None
            reply = self._read(timeout)
            if reply is None:
                raise NoAnswer
            self._waiting = None
        if reply[1] == "ok":
            return reply[2]
        kind, message = reply[2], reply[3]
        if kind == "KeyError":
            raise KeyError(message)
        if kind == "ValueError":
            raise ValueError(message)
        raise RayConnectionError(message)

    def _settle(self, late: tuple[Any, ...]) -> None:
        # An answer its caller gave up on: a group it launched has no owner, and must go.
        assert self._waiting is not None
        if self._waiting[1] == "launch" and late[1] == "ok":
            self._orphans.append(str(late[2][0]))
        self._waiting = None

    def catch_up(self, timeout: float) -> bool:
        """Whether the owed answer (if any) has come."""
        with self._lock:
            if self._waiting is None:
                return True
            late = self._read(timeout)
            if late is None:
                return False
            self._settle(late)
            return True

    def orphans(self) -> list[str]:
        with self._lock:
            found, self._orphans = self._orphans, []
            return found

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.conn.close()

    def close(self, timeout: float) -> None:
        """Ask the driver to end its groups and exit; kill it if it does not."""
        if self.process.poll() is None:
            with contextlib.suppress(NoAnswer, Gone, RayConnectionError):
                self.call("close", timeout=timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self.kill()


# -- addresses --------------------------------------------------------------------------------


def probe_target(address: str | None) -> tuple[str, int] | None:
    """The host and port a Ray address connects to first (the GCS, or Ray Client's server);
    None where there is none to name (``auto``, a local instance, no port)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def loopback_cluster(address: str | None) -> bool:
    """Whether the address is a loopback one (the cluster is on this machine only)."""
    target = probe_target(address)
    return target is not None and is_loopback(target[0])


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
