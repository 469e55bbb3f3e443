"""``serve(settings)``: the master in the foreground under uvicorn (``detlite master``).

The database is opened and migrated, and the resource manager built, before uvicorn
starts, so a wrong URL, an unreachable PostgreSQL or a Ray cluster that does not answer
within its ``connect_timeout`` is one clear error instead of a traceback from inside the
server (or a server that never comes up). Ctrl-C (SIGINT) or SIGTERM stops it gracefully:
requests in flight finish, the scheduler stops its workers, the resource manager is closed,
the engine is disposed, and ``serve`` returns normally. Either signal also stops a master
that is still connecting to its resource manager (``serve`` then returns at once).

uvicorn runs with its h11 protocol (whether or not httptools is installed), because that is
the one whose request head has a size bound: a request line and headers over
``MAX_HEADER_BYTES`` (16 KiB) get a 400. An idle keep-alive connection is closed after
``KEEP_ALIVE_TIMEOUT`` seconds. ``detlite.master._connections`` adds a time limit on each
request's head and a cap on open connections below the process's file limit (which is
raised to the hard limit at start), so that clients that connect and say nothing cannot
take every file descriptor. Bodies are capped and timed in the app
(``detlite.master._limits``).
"""

from __future__ import annotations

import copy
import logging
import logging.config
import multiprocessing
import multiprocessing.process
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy.exc
import uvicorn
import uvicorn.config

from detlite.errors import DetliteError
from detlite.interfaces import ResourceManager
from detlite.master import db
from detlite.master._connections import GuardedH11Protocol, raise_descriptor_limit
from detlite.master._limits import MAX_HEADER_BYTES
from detlite.master.app import create_app
from detlite.master.dblock import lock_database, record_holder, release
from detlite.master.scheduler.scheduler import build_resource_manager
from detlite.master.settings import Settings

__all__ = ["KEEP_ALIVE_TIMEOUT", "prepare_database", "serve"]

KEEP_ALIVE_TIMEOUT = 5  # seconds; uvicorn's default, stated

logger = logging.getLogger("detlite.master.server")


def prepare_database(settings: Settings) -> None:
    """Open the database and bring it to the newest schema, or say clearly why not."""
    engine = db.create_engine(settings.db_url)
    try:
        db.upgrade(engine)
    except sqlalchemy.exc.OperationalError as exc:
        raise DetliteError(
            f"cannot open the database {db.redact_url(settings.db_url)}: {exc.orig}"
        ) from exc
    finally:
        engine.dispose()


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup, with detlite's loggers printed the same way."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["detlite"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


class _Server(uvicorn.Server):
    """uvicorn's server, reporting its real address once it listens (``--port 0`` works)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self._on_ready(f"http://{shown}:{port}")


def serve(
    settings: Settings,
    *,
    log_level: str = "info",
    on_ready: Callable[[str], None] = print,
) -> None:
    """Run the master until interrupted; ``on_ready`` gets its URL once it accepts requests.

    On a SQLite file it holds the database's lock (``detlite.master.dblock``) throughout:
    ``MasterBusy`` when another process's master already serves that database."""
    lock = lock_database(settings.db_url)
    try:
        _serve(settings, lock, log_level, on_ready)
    finally:
        release(lock)


def _serve(
    settings: Settings, lock: int | None, log_level: str, on_ready: Callable[[str], None]
) -> None:
    prepare_database(settings)
    if threading.current_thread() is threading.main_thread():
        # After a graceful shutdown uvicorn re-raises the signal it caught; for SIGTERM the
        # default action would kill the process, so make it end like Ctrl-C instead. Set
        # now, so that SIGTERM also ends a master still connecting to its resource manager.
        signal.signal(signal.SIGTERM, _interrupt)
    logging.config.dictConfig(_log_config(log_level))  # what the connection attempt logs
    if settings.workers > 1:
        _supervise(settings, log_level, on_ready)
        return
    try:
        rm = build_resource_manager(settings) if settings.scheduler else None
    except KeyboardInterrupt:
        return  # stopped while connecting: the manager cleaned up after itself
    try:
        _run(settings, rm, lock, log_level, on_ready)
    finally:
        if rm is not None:
            rm.close()


def _run(
    settings: Settings,
    rm: ResourceManager | None,
    lock: int | None,
    log_level: str,
    on_ready: Callable[[str], None],
) -> None:
    def ready(url: str) -> None:
        record_holder(lock, url, "master")
        on_ready(url)

    raise_descriptor_limit()
    config = _uvicorn_config(create_app(settings, resource_manager=rm), settings, log_level)
    server = _Server(config, ready)
    try:
        server.run()
    except KeyboardInterrupt:
        return  # the graceful shutdown is done
    except SystemExit as exc:
        raise DetliteError("the master could not start (the reason is logged above)") from exc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _uvicorn_config(app: Any, settings: Settings, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=_log_config(log_level),
        lifespan="on",
        http=GuardedH11Protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
    )


def _supervise(settings: Settings, log_level: str, on_ready: Callable[[str], None]) -> None:
    """``settings.workers`` API processes on one listening socket, each started again if it
    dies; the scheduler's leader is elected among them (``detlite.master.leader``)."""
    sock = _uvicorn_config(None, settings, log_level).bind_socket()
    settings = settings.model_copy(update={"port": sock.getsockname()[1]})  # port 0 chosen
    spawn = multiprocessing.get_context("spawn")

    def start() -> multiprocessing.process.BaseProcess:
        process = spawn.Process(
            target=_api_process, args=(settings, sock, log_level), name="detlite-api"
        )
        process.start()
        return process

    processes = [start() for _ in range(settings.workers)]
    logger.info("%d API processes: %s", len(processes), ", ".join(str(p.pid) for p in processes))
    on_ready(settings.url)
    try:
        while True:
            time.sleep(0.5)
            for i, process in enumerate(processes):
                if not process.is_alive():
                    logger.warning(
                        "API process %d ended (exit code %s); starting another",
                        process.pid,
                        process.exitcode,
                    )
                    processes[i] = start()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()  # SIGTERM: each stops gracefully, its workers first
        deadline = time.monotonic() + settings.stop_grace + 30
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
    finally:
        sock.close()


def _api_process(settings: Settings, sock: socket.socket, log_level: str) -> None:
    """One of the supervised API processes (a spawned child): the whole app on ``sock``."""
    raise_descriptor_limit()
    logging.config.dictConfig(_log_config(log_level))
    config = _uvicorn_config(create_app(settings), settings, log_level)
    uvicorn.Server(config).run(sockets=[sock])
