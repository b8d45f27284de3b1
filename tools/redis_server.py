"""A private Redis server on a free loopback port, for the shared example database's test.

Usage (what ``tox -e redis`` runs around ``tests/test_redis_db.py``)::

    python -m tools.redis_server start DIR   # prints the URL, writes DIR/redis.url and DIR/redis.pid
    python -m tools.redis_server stop DIR    # stops the server DIR/redis.pid names

``start`` runs ``redis-server`` (Debian: ``apt-get install redis-server``) bound to 127.0.0.1
only, on a port the kernel reports free, daemonised, with no persistence (``--save ""``,
``--appendonly no``: the database lives as long as the server), and returns once it answers
``PING``. The URL it writes, ``redis://127.0.0.1:PORT/0``, is what ``DERIVS_HYPOTHESIS_DB`` and
``DERIVS_TEST_REDIS_URL`` take. ``stop`` sends SIGTERM to the pid in the pidfile and waits for
the process to end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

WAIT_S = 10.0


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """Whether a Redis server on ``port`` answers PING (the protocol's inline form)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(folder: Path) -> str:
    """Start the server with its pidfile and URL file in ``folder``; return the URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit(
            "redis_server start: no redis-server on PATH (apt-get install redis-server)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pidfile = folder / "redis.pid"
    subprocess.run(
        [
            server,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--daemonize", "yes",
            "--pidfile", str(pidfile),
            "--dir", str(folder),
            "--logfile", str(folder / "redis.log"),
            "--save", "",
            "--appendonly", "no",
        ],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + WAIT_S
    while not (pidfile.exists() and _answers(port)):
        if time.monotonic() > deadline:
            raise SystemExit(f"redis_server start: no answer on 127.0.0.1:{port} in {WAIT_S} s")
        time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    (folder / "redis.url").write_text(url + "\n")
    return url


def stop(folder: Path) -> None:
    """SIGTERM the server whose pid ``folder/redis.pid`` holds, and wait until it has gone."""
    pidfile = folder / "redis.pid"
    if not pidfile.exists():
        raise SystemExit(f"redis_server stop: no pidfile {pidfile}")
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise SystemExit(f"redis_server stop: pid {pid} still runs after {WAIT_S} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("folder", type=Path, help="where the pidfile, URL file and log go")
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start(args.folder))
    else:
        stop(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
