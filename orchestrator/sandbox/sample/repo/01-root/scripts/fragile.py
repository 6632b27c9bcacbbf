#!/usr/bin/python3
"""A long-running script that holds one direct database connection: a "fragile" script.

    python3 scripts/fragile.py --config ETC_JSON [--ready-file PATH] [--interval S]

It connects to PostgreSQL as ETC_JSON's ``dsn``/``passfile`` say, with
``application_name='fragile'``, and runs a tiny query every ``--interval``
seconds (0.5). It is fragile on purpose: if its connection is cut it reports
that and exits 1, which is why a deploy stops it before the window.

Once connected and past its first query it creates ``--ready-file`` (removed
again on exit). SIGTERM or SIGINT: close the connection, exit 0.
"""

import argparse
import json
import os
import select
import signal
import sys
from pathlib import Path

import psycopg2


def stop_signals(signals):
    """Route ``signals`` to a wakeup pipe; return its read end."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for signum in signals:
        signal.signal(signum, lambda *_: None)
    return read_end


def connect(config):
    extra = {"application_name": "fragile", "connect_timeout": 5}
    if config.get("passfile"):
        extra["passfile"] = config["passfile"]
    conn = psycopg2.connect(config["dsn"], **extra)
    conn.autocommit = True
    return conn


def run(conn, stop, interval, ready_file):
    """Query every ``interval`` s until a stop signal; return the exit status."""
    beats = 0
    with conn.cursor() as cur:
        while True:
            try:
                cur.execute("SELECT count(*) FROM item")
                cur.fetchone()
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                print(f"fragile: lost the database connection: {error}".strip(), flush=True)
                return 1
            beats += 1
            if beats == 1:
                print(f"fragile: connected, pid {os.getpid()}", flush=True)
                if ready_file:
                    ready_file.touch()
            if select.select([stop], [], [], interval)[0]:
                print(f"fragile: stopping after {beats} queries", flush=True)
                return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the host's ETC JSON")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    stop = stop_signals((signal.SIGTERM, signal.SIGINT))
    try:
        conn = connect(config)
    except psycopg2.Error as error:
        print(f"fragile: cannot connect: {error}".strip(), flush=True)
        return 1
    try:
        return run(conn, stop, args.interval, args.ready_file)
    finally:
        conn.close()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
