#!/usr/bin/python3
"""The sample application server: an item list backed by PostgreSQL.

    python3 app/server.py --bind ADDR --port PORT --config ETC_JSON

ETC_JSON is the host's ``{"dsn": "...", "passfile": "..."}`` (optional
``"pool_size"``; ``"pool_warm"``, how many connections open before the server listens,
``pool_size`` unless told; and ``"pool_wait_s"``: how long a request waits for a free
connection). Routes:

- ``GET /``: the item list (HTML, built by ``items`` and ``render``);
- ``GET /+health``: ``{"ok": true, "revision": SHA, "patch": [major, minor, point]}``
  or 503 ``{"ok": false, "error": ...}`` when the database fails;
- ``GET /+alive``: 200 without asking the database (haproxy's health check: a
  fastdowntime window holds the database, and a held check would time out).

The revision is the name of the release directory this file runs from
(``releases/<sha>/app/server.py``). Database work runs on a small pool and is
retried once on a fresh connection when the connection dropped (the deploy
cuts connections during its window). SIGTERM stops accepting, finishes the
requests in flight and exits 0.

The pool is warm before the server listens: a load balancer moving traffic here
must not find it opening connections, each a login of some milliseconds, while
requests queue behind them (on a cold pool, every slow login lets more requests
pile up and ask for more connections). When the database cannot be reached (within
the connection's 5 s timeout), the server logs it and listens anyway: it connects on
demand, as requests come.
"""

import argparse
import json
import os
import select
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import items
import psycopg2
import psycopg2.extensions
import render

REVISION = Path(__file__).resolve().parents[1].name
DROPPED = (psycopg2.OperationalError, psycopg2.InterfaceError)
LATEST_PATCH = (
    "SELECT major, minor, patch FROM LaunchpadDatabaseRevision"
    " ORDER BY major DESC, minor DESC, patch DESC LIMIT 1"
)


class PoolTimeout(Exception):
    """Every pooled connection stayed busy for longer than the wait allowed."""


class Pool:
    """At most ``size`` autocommit connections, shared by the request threads."""

    def __init__(self, connect, size, wait_s=10.0):
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._idle = []
        self._lock = threading.Lock()
        self._wait_s = wait_s

    def run(self, work):
        """Return ``work(cursor)``; once more on a new connection if the first one dropped."""
        try:
            return self._run_once(work, fresh=False)
        except DROPPED:
            self.close()  # its siblings were most likely cut at the same time
            return self._run_once(work, fresh=True)

    def _run_once(self, work, fresh):
        if not self._slots.acquire(timeout=self._wait_s):
            raise PoolTimeout(f"no database connection free within {self._wait_s:.0f} s")
        conn = None
        try:
            if not fresh:
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._connect()
                conn.autocommit = True
            with conn.cursor() as cur:
                result = work(cur)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        else:
            with self._lock:
                self._idle.append(conn)
            return result
        finally:
            self._slots.release()

    def warm(self, count):
        """Open up to ``count`` idle connections now; stop at the first that fails and
        return its error (None when all opened)."""
        opened = []
        try:
            for _ in range(count):
                conn = self._connect()
                conn.autocommit = True
                opened.append(conn)
        except psycopg2.Error as exc:
            return exc
        finally:
            with self._lock:
                self._idle.extend(opened)
        return None

    def close(self):
        """Close every idle connection; busy ones are closed when their request ends."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def connector(config):
    """A function opening one connection as ``config`` (the host's ETC JSON) says."""
    dsn = config["dsn"]
    extra: dict[str, object] = {"connect_timeout": 5}
    if config.get("passfile"):
        extra["passfile"] = config["passfile"]
    if "application_name" not in psycopg2.extensions.parse_dsn(dsn):
        extra["application_name"] = "sample-app"
    return lambda: psycopg2.connect(dsn, **extra)


def latest_patch(cur):
    cur.execute(LATEST_PATCH)
    row = cur.fetchone()
    return list(row) if row else None


class Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0), so a shutdown never waits on idle clients."""

    server_version = "sample-app"
    timeout = 30
    pool: Pool  # set by main()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            self._page(parse_qs(url.query))
        elif url.path == "/+health":
            self._health()
        elif url.path == "/+alive":
            self._send(200, "text/plain; charset=utf-8", f"alive {REVISION}\n".encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _page(self, query):
        try:
            body = render.page(self.pool.run(lambda cur: items.fetch(cur, query)))
        except (*DROPPED, PoolTimeout) as error:
            self._send_error(503, f"database unavailable: {error}")
        except psycopg2.Error as error:
            self._send_error(500, f"database error: {error}")
        else:
            self._send(200, "text/html; charset=utf-8", body)

    def _health(self):
        try:
            patch = self.pool.run(latest_patch)
        except (psycopg2.Error, PoolTimeout) as error:
            status = {"ok": False, "revision": REVISION, "error": str(error).strip()}
            self._send(503, "application/json", json.dumps(status).encode())
            return
        status = {"ok": True, "revision": REVISION, "patch": patch}
        self._send(200, "application/json", json.dumps(status).encode())

    def _send_error(self, code, message):
        self._send(code, "text/plain; charset=utf-8", message.strip().encode() + b"\n")

    def _send(self, code, content_type, body):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True
    # socketserver's default backlog is 5: a burst (held requests let go, the load
    # balancer's traffic moving here) overflows it, and a dropped SYN costs the client 1 s
    request_queue_size = 128


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="the host's ETC JSON")
    return parser.parse_args(argv)


def stop_signals(signals):
    """Route ``signals`` to a wakeup pipe; return its read end (safe in any thread state)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for signum in signals:
        signal.signal(signum, lambda *_: None)
    return read_end


def wait_for_signal(read_end):
    """Block until a signal routed by :func:`stop_signals` arrives; return its number."""
    select.select([read_end], [], [])
    return os.read(read_end, 1)[0]


def main(argv=None):
    args = parse_args(argv)
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    stop = stop_signals((signal.SIGTERM, signal.SIGINT))
    size = int(config.get("pool_size", 8))
    pool = Pool(connector(config), size, float(config.get("pool_wait_s", 10.0)))
    warm = config.get("pool_warm")
    failed = pool.warm(min(size, size if warm is None else int(warm)))
    if failed is not None:
        print(f"warming the pool: {failed}".rstrip() + "; connecting on demand",
              file=sys.stderr, flush=True)
    Handler.pool = pool
    server = Server((args.bind, args.port), Handler)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    serving.start()
    print(f"listening on {args.bind}:{args.port} revision {REVISION}", file=sys.stderr, flush=True)
    signum = wait_for_signal(stop)
    print(f"signal {signum}: finishing requests in flight", file=sys.stderr, flush=True)
    server.shutdown()
    serving.join()
    server.server_close()
    pool.close()
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
