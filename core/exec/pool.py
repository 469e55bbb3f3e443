"""The warm worker pool: ``python -m detlite.exec.pool``, a parent that forks trial workers.

A fresh ``python -m detlite.exec.trial`` pays for its interpreter, detlite's imports
(requests, the config models, the harness, storage...), the download of the experiment's
context archive and the import of what the trial's code imports (torch: seconds), on every
run of every trial. A search is mostly many short trials, so the local resource manager
(``detlite.resources.local``) keeps one *pool parent* per experiment that has paid for all
of that once, and forks each run's workers from it.

The parent, started by the resource manager (at an experiment's second launch: see there)
with that launch's environment less what belongs to one run (the token, trial, allocation,
work directory, ranks and port: ``PER_RUN_ENV``; ``CUDA_VISIBLE_DEVICES`` is empty), warms
up:

1. imports detlite's worker modules (``WARM_MODULES``: ``detlite.exec.trial`` and what it
   imports only once it runs);
2. fetches the experiment's config and context archive once, with the token of the launch
   that started it (the first message on its socket), writes the archive to
   ``<pool dir>/context.tgz`` and unpacks it (``safe_extract``) into ``<pool dir>/context``;
3. imports the config's ``entrypoint`` module from there (``internal.native.command``
   configs: nothing of the experiment's), then the framework adapter that owns its class,
   and finally forgets every module loaded from the context directory again. What stays
   imported is what the experiment's code imports from elsewhere (torch, numpy, its
   libraries): the experiment's own files always run afresh in each worker, with the
   worker's environment, exactly as without the pool;
4. checks that forking it is safe: it must still have a single Python thread, and no CUDA
   (no ``libcuda``/``libnvidia-ml`` mapped, torch's CUDA not initialised); where libraries
   started native threads (numpy's BLAS does, harmlessly), a forked test process must
   compute with torch's and numpy's thread pools within 15 s (once code has used OpenMP's
   pool at import time, a forked child hangs in its first parallel loop). Otherwise it
   says why and forks nothing: the resource manager launches that experiment's workers as
   plain processes.

A *shared* parent gets no token (``"token": ""``): it belongs to no experiment, and warms up
with step 1, the plugins' entry points and step 4 only. The local resource manager starts one
with itself (``warm_start``) and forks from it the launches that no experiment's parent
serves yet (an experiment's first ones): such a worker downloads and imports its context
itself, as a plain one does, but starts without an interpreter's start and detlite's imports.

It then answers ``ready`` and serves. Any step that fails is logged to ``<pool dir>/pool.log``
and the parent serves with what it has: a worker then does the rest itself (downloads the
archive, meets the import error) and reports it in the trial's own logs, as without the pool.

Each ``spawn`` forks a fresh child, which leads a session of its own (``os.setsid``, so
that signalling the group reaches what it starts), gets the run's whole environment in
``os.environ`` (ranks and ``CUDA_VISIBLE_DEVICES`` included, set before anything touches
CUDA, plus ``DETLITE_CONTEXT_ARCHIVE`` naming the parent's archive so that it unpacks a
copy instead of downloading one), the resource manager's working directory, ``/dev/null``
as stdin and the rank's ``.out``/``.err`` files as stdout/stderr, the signal handlers the
pool had changed back, and runs ``detlite.exec.trial.main()``; its exit status is the
worker's, and it ends with ``os._exit`` after the exit work of an interpreter (non-daemon
threads joined, ``atexit`` handlers run, streams flushed). Every run is a fork of the same
untouched parent: a global, an environment variable, leaked memory or a crash of one run
never reaches the next. The parent reaps its children (``SIGCHLD``) and reports each exit
code as ``subprocess.Popen`` would (negative: the signal that killed it).

The parent stays single-threaded, never touches CUDA, and ends: when the resource manager's
end of the socket closes (its master stopped or crashed: the children are killed with their
groups first, since no one would be left to stop them), on SIGTERM (likewise), or after
``--idle`` seconds with no child. It then removes its archive and context directory.

The protocol on the socket (the resource manager's ``socketpair``, inherited as ``--fd``):
frames of a 4-byte big-endian length and a JSON object. To the parent: ``{"op": "warm",
"token"}`` once, first; ``{"op": "spawn", "id", "env", "cwd", "stdout", "stderr"}``. From
it: ``{"op": "ready", "serves", "why", "archive", "notes"}`` once; ``{"op": "spawned",
"id", "pid"}`` or ``{"op": "refused", "id", "error"}`` per spawn; ``{"op": "exited",
"pid", "code"}`` per child.

A forked worker differs from a fresh one in what no trial should rely on: its command line
and ``/proc/<pid>/environ`` are the parent's (``os.environ`` is the run's), and it shares
the parent's hash seed and the state of modules the parent imported (numpy's global random
generator included; the harness seeds it per trial).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "EXPERIMENT_ENV",
    "PER_RUN_ENV",
    "POOL_ENV",
    "WARM_MODULES",
    "Frames",
    "PoolParent",
    "encode",
    "main",
    "pool_turned_off",
]

log = logging.getLogger("detlite.exec.pool")

#: ``DETLITE_WORKER_POOL=0`` in the resource manager's environment turns the pool off.
POOL_ENV = "DETLITE_WORKER_POOL"

_OFF = frozenset({"0", "false", "no", "off"})


def pool_turned_off(env: Mapping[str, str]) -> bool:
    """Whether ``DETLITE_WORKER_POOL`` in ``env`` turns the pool off (0, false, no, off)."""
    return env.get(POOL_ENV, "1").strip().lower() in _OFF


#: The variables that belong to one run (or one rank) of a trial: a pool parent is started
#: without them, and everything else in its environment is what its imports saw.
PER_RUN_ENV = frozenset(
    {
        "DETLITE_TOKEN",
        "DETLITE_TRIAL_ID",
        "DETLITE_TRIAL_RUN_ID",
        "DETLITE_ALLOCATION_ID",
        "DETLITE_WORK_DIR",
        "DETLITE_RESTORE_CHECKPOINT",
        "DETLITE_CONTEXT_ARCHIVE",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_PORT",
        "CUDA_VISIBLE_DEVICES",
    }
)

#: Variables of one experiment, beside ``PER_RUN_ENV``: a shared parent is started without
#: them, and serves any experiment's launch whose other variables are its own.
EXPERIMENT_ENV = frozenset({"DETLITE_EXPERIMENT_ID", "DETLITE_MASTER"})

#: What the parent imports first: the worker and what it imports only once it runs (what a
#: plain worker of the fake framework had imported when it exited).
WARM_MODULES = (
    "detlite.exec.trial",
    "detlite.exec._master",
    "detlite.exec.logship",
    "detlite.exec.reporter",
    "detlite.exec._preemption",
    "detlite.config",
    "detlite.context",
    "detlite.harness",
    "detlite.workloads",
    "detlite.worker",
    "detlite.experimental",
    "detlite.master.context_archive",
    "detlite.storage.shared_fs",
    "pathspec",  # the worker lists context files (detlite.context)
)

_HEADER = struct.Struct(">I")
_MAX_FRAME = 64 << 20
_CUDA_LIBRARIES = (b"libcuda.so", b"libnvidia-ml.so")
_PROBE_S = 15.0


# -- the wire -------------------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame: a 4-byte big-endian length, then ``message`` as JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


class Frames:
    """Splits the bytes read from a socket into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Take ``data``; return the messages it completed, in order."""
        self._buffer += data
        found = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > _MAX_FRAME:
                raise ValueError(f"a pool frame of {size} bytes is larger than {_MAX_FRAME}")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            found.append(json.loads(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return found


# -- the parent -----------------------------------------------------------------------------


class _Gone(BaseException):
    """The resource manager's end of the socket is closed, or SIGTERM came while warming
    (a BaseException, so that the warm-up's ``except Exception`` does not swallow it)."""


class PoolParent:
    """One experiment's warm parent (see the module doc): ``warm()``, then ``serve()``."""

    def __init__(self, sock: socket.socket, directory: Path, idle: float) -> None:
        self.sock = sock
        self.dir = directory
        self.idle = idle
        self.archive: Path | None = None
        self.children: set[int] = set()
        self._frames = Frames()
        self._inbox: list[dict[str, Any]] = []
        self._terminated = False
        self._serving = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The handlers the pool replaces; a child gets them back before it runs anything.
        self._saved: dict[int, Any] = {
            sig: signal.getsignal(sig) for sig in (signal.SIGCHLD, signal.SIGTERM)
        }
        signal.signal(signal.SIGCHLD, _wake_only)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._terminated = True
        if not self._serving:
            raise _Gone()  # still warming up (an import can take long): stop it now

    # -- talking ----------------------------------------------------------------------------

    def _send(self, message: Mapping[str, Any]) -> None:
        try:
            self.sock.sendall(encode(message))
        except OSError as exc:
            raise _Gone() from exc

    def _receive(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise _Gone()
        self._inbox += self._frames.feed(data)

    def _first_message(self) -> dict[str, Any]:
        while not self._inbox:
            self._receive()
        return self._inbox.pop(0)

    # -- warming ----------------------------------------------------------------------------

    def warm(self) -> dict[str, Any]:
        """Warm up (module doc, steps 1-4); returns the ``ready`` message."""
        first = self._first_message()
        token = str(first.get("token") or "")
        notes: list[str] = []
        started = time.monotonic()
        for name in WARM_MODULES:
            try:
                __import__(name)
            except Exception as exc:  # the worker meets it again, and reports it
                log.warning("importing %s failed: %s", name, exc)
                notes.append(f"{name}: {exc}")
        log.info("detlite imported in %.2f s", time.monotonic() - started)
        try:
            if token:
                self._fetch_and_import(token, notes)
            else:
                self._warm_shared()
        except Exception as exc:
            log.warning("warming up failed; workers do it themselves:\n%s", traceback.format_exc())
            notes.append(f"warming: {exc}")
        serves, why = self._fork_safe()
        if not serves:
            log.warning("not forking workers: %s", why)
        log.info("warm after %.2f s", time.monotonic() - started)
        return {
            "op": "ready",
            "serves": serves,
            "why": why,
            "archive": self.archive is not None,
            "notes": notes,
        }

    @staticmethod
    def _warm_shared() -> None:
        """A shared parent (no token: no experiment): the plugins' entry points, read once."""
        from detlite.exec._env import EXTRA_PLUGINS_ENV
        from detlite.worker import warm_up

        extra = [p.strip() for p in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if p.strip()]
        warm_up(extra)

    def _fetch_and_import(self, token: str, notes: list[str]) -> None:
        from detlite.exec._env import EXTRA_PLUGINS_ENV
        from detlite.exec._master import MasterClient
        from detlite.master.context_archive import safe_extract
        from detlite.worker import warm_up

        master = os.environ.get("DETLITE_MASTER", "")
        experiment_id = int(os.environ.get("DETLITE_EXPERIMENT_ID", ""))
        extra = [p.strip() for p in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if p.strip()]
        client = MasterClient(master, token)
        try:
            config_json = client.get(f"/api/v1/experiments/{experiment_id}")["config"]
            body = client.get(f"/api/v1/experiments/{experiment_id}/model_def")
        finally:
            client.close()
        archive = base64.b64decode(body["b64Tgz"])
        context = self.dir / "context"
        safe_extract(archive, context)
        staging = self.dir / "context.tgz.part"
        staging.write_bytes(archive)
        os.replace(staging, self.dir / "context.tgz")
        self.archive = self.dir / "context.tgz"
        # The plugins' entry points read and the config validated once, for every worker.
        plugins = warm_up(extra, config_json)
        config = plugins.load_config(config_json)
        native = config.internal.native if config.internal is not None else None
        if native is not None and native.command:
            notes.append("a native command: nothing of the experiment's is imported")
            return
        if not config.entrypoint:
            return
        try:
            self._import_entrypoint(config.entrypoint, context, plugins)
        finally:
            _forget_modules_under(context)

    def _import_entrypoint(self, entrypoint: str, context: Path, plugins: Any) -> None:
        from detlite.context import import_entrypoint

        # As the worker does: the context is the working directory while its code imports.
        here = os.getcwd()
        os.chdir(context)
        try:
            started = time.monotonic()
            trial_class = import_entrypoint(entrypoint, context)
            plugins.framework_for(trial_class).controller_for(trial_class)
            log.info("imported %s in %.2f s", entrypoint, time.monotonic() - started)
        finally:
            os.chdir(here)

    def _fork_safe(self) -> tuple[bool, str]:
        """Whether workers forked from here would work: no other Python thread, no CUDA,
        and, where libraries started threads of their own, a forked test process that
        computes with them in time (OpenMP's pool, once used, hangs a forked child)."""
        threads = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if threads:
            return False, f"importing the experiment's code started threads ({', '.join(threads)})"
        with contextlib.suppress(OSError):
            maps = Path("/proc/self/maps").read_bytes()
            for library in _CUDA_LIBRARIES:
                if library in maps:
                    return False, (
                        f"importing the experiment's code loaded {library.decode()} (CUDA was "
                        "touched at import time; a forked worker could not use the GPU)"
                    )
        torch = sys.modules.get("torch")
        with contextlib.suppress(Exception):
            if torch is not None and torch.cuda.is_initialized():
                return False, "importing the experiment's code initialised CUDA"
        if _native_threads() > 1:
            return self._probe()
        return True, ""

    def _probe(self) -> tuple[bool, str]:
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                _parallel_work()
                code = 0
            finally:
                os._exit(code)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                if code == 0:
                    log.info("a forked test process computed in %.2f s", time.monotonic() - started)
                    return True, ""
                return False, f"a forked test process failed to compute (exit {code})"
            if time.monotonic() - started > _PROBE_S:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False, (
                    f"a forked test process hung for {_PROBE_S:.0f} s in a parallel computation "
                    "(the experiment's code computed with threads at import time)"
                )
            time.sleep(0.01)

    # -- serving ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Fork workers until the socket closes, SIGTERM, or ``idle`` seconds with none."""
        self._serving = True
        idle_since = time.monotonic()
        while not self._terminated:
            for message in self._take_inbox():
                if message.get("op") == "spawn":
                    self._spawn(message)
            if self._reap():
                idle_since = time.monotonic()
            timeout = None
            if not self.children:
                timeout = self.idle - (time.monotonic() - idle_since)
                if timeout <= 0:
                    log.info("no worker for %.0f s: exiting", self.idle)
                    return
            sock = self.sock.fileno()
            readable, _, _ = select.select([sock, self._wake_r], [], [], timeout)
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
            if sock in readable:
                self._receive()
        log.info("SIGTERM: exiting")

    def _take_inbox(self) -> list[dict[str, Any]]:
        taken, self._inbox = self._inbox, []
        return taken

    def _reap(self) -> bool:
        """Report the children that exited; True when the last one just did."""
        ended = False
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return True
            if pid == 0:
                break
            if pid in self.children:
                self.children.discard(pid)
                ended = not self.children
                self._send({"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})
        return ended

    def _spawn(self, message: Mapping[str, Any]) -> None:
        request = message.get("id")
        try:
            env = {str(k): str(v) for k, v in dict(message["env"]).items()}
            cwd = str(message["cwd"])
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            out = os.open(str(message["stdout"]), flags, 0o666)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            self._send({"op": "refused", "id": request, "error": str(exc)})
            return
        try:
            err = os.open(str(message["stderr"]), flags, 0o666)
        except (KeyError, OSError) as exc:
            os.close(out)
            self._send({"op": "refused", "id": request, "error": str(exc)})
            return
        if self.archive is not None:
            env["DETLITE_CONTEXT_ARCHIVE"] = str(self.archive)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(out)
            os.close(err)
            self._send({"op": "refused", "id": request, "error": f"fork failed: {exc}"})
            return
        if pid == 0:
            self._child(env, cwd, out, err)  # never returns
        os.close(out)
        os.close(err)
        self.children.add(pid)
        self._send({"op": "spawned", "id": request, "pid": pid})

    def _child(self, env: Mapping[str, str], cwd: str, out: int, err: int) -> None:
        status = 1
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            self.sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            null = os.open(os.devnull, os.O_RDONLY)
            for fd, target in ((null, 0), (out, 1), (err, 2)):
                os.dup2(fd, target)
            for fd in {null, out, err} - {0, 1, 2}:
                os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            status = _run_worker()
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(status)

    def shutdown(self) -> None:
        """Kill the children that are left, with their groups, and reap them."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(_Gone):
                    code = os.waitstatus_to_exitcode(status)
                    self._send({"op": "exited", "pid": pid, "code": code})
        self.children.clear()

    def cleanup(self) -> None:
        """Remove the archive and the context directory (``pool.log`` stays)."""
        import shutil

        shutil.rmtree(self.dir / "context", ignore_errors=True)
        for name in ("context.tgz", "context.tgz.part"):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _parallel_work() -> None:
    """A little of what a worker computes, with each numeric library that is imported, big
    enough to use their thread pools."""
    torch: Any = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "ones"):
        float(torch.ones(1 << 20).sum())
        float((torch.ones(256, 256) @ torch.ones(256, 256)).sum())
    numpy: Any = sys.modules.get("numpy")
    if numpy is not None and hasattr(numpy, "ones"):
        float((numpy.ones((256, 256)) @ numpy.ones((256, 256))).sum())


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD: nothing to do here; the wakeup fd wakes the loop, which reaps."""


def _forget_modules_under(directory: Path) -> None:
    """Drop from ``sys.modules`` every module loaded from ``directory``: each worker runs
    the experiment's own files itself (module doc, step 3)."""
    root = str(directory.resolve())

    def inside(path: str | None) -> bool:
        if not path:
            return False
        with contextlib.suppress(OSError, ValueError):
            return os.path.commonpath([root, os.path.realpath(path)]) == root
        return False

    def loaded_from(module: Any) -> list[Any]:
        found = []
        for attribute in ("__file__", "__path__"):
            try:  # some modules' attributes are odd (torch.classes' __path__ is no list)
                value = getattr(module, attribute, None)
                found += [value] if isinstance(value, str) else list(value or ())
            except Exception:
                continue
        return found

    for name, module in list(sys.modules.items()):
        if any(inside(p) for p in loaded_from(module) if isinstance(p, str)):
            del sys.modules[name]
    import importlib

    importlib.invalidate_caches()


# -- the child ------------------------------------------------------------------------------


def _run_worker() -> int:
    """Run the trial worker in this forked child; returns its exit status."""
    try:
        from detlite.exec import trial
    except BaseException:
        traceback.print_exc()
        return 1
    sys.argv = [str(trial.__file__)]
    sys.modules["__main__"] = trial  # as ``python -m detlite.exec.trial`` has it
    try:
        status = trial.main([])
    except SystemExit as exc:
        status = _exit_status(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        status = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        status = 1
    return _interpreter_exit(status)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _interpreter_exit(status: int) -> int:
    """What an interpreter does on its way out: join non-daemon threads, run ``atexit``
    handlers, flush the streams."""
    shutdown = getattr(threading, "_shutdown", None)
    with contextlib.suppress(Exception):
        if shutdown is not None:
            shutdown()
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    with contextlib.suppress(Exception):
        if run_exitfuncs is not None:
            run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return status


# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s pool {os.getpid()} %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # a worker's own root handler must not see the pool's lines
    try:
        yield
    finally:
        log.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a pool parent (started by ``LocalResourceManager``, never by hand)."""
    parser = argparse.ArgumentParser(prog="python -m detlite.exec.pool")
    parser.add_argument("--fd", type=int, required=True, help="the resource manager's socket")
    parser.add_argument("--dir", type=Path, required=True, help="the parent's own directory")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds with no worker")
    args = parser.parse_args(argv)
    with _logging_to_stderr():
        sock = socket.socket(fileno=args.fd)
        parent = PoolParent(sock, args.dir, args.idle)
        try:
            parent._send(parent.warm())
            parent.serve()
        except _Gone:
            log.info("the resource manager went away: stopping")
        finally:
            parent.shutdown()
            parent.cleanup()
            with contextlib.suppress(OSError):
                sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
