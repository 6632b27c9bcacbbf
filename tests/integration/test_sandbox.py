"""The sandbox's real services behave as the deploys will rely on them."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import paramiko
import psycopg2
import pytest

from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.haproxy import admin, server_states

pytestmark = pytest.mark.integration


def ssh_client(ctx: Context, known_hosts: str | None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if known_hosts is not None:
        client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect(ctx: Context, port: int, user: str, dbname: str = L.DB_NAME):  # type: ignore[no-untyped-def]
    return psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname=dbname,
                            password=ctx.passwords[user], connect_timeout=5)


def test_ssh_with_strict_host_keys(sandbox: Context) -> None:
    """Every host accepts the deploy key, its host key is in known_hosts, and it runs commands."""
    layout = sandbox.layout
    for host in layout.hosts:
        client = ssh_client(sandbox, str(layout.known_hosts))
        client.connect(host.address, L.SSH_PORT, username=L.DEPLOY_USER,
                       key_filename=str(layout.key_file), look_for_keys=False,
                       allow_agent=False, timeout=5)
        _, out, _ = client.exec_command("id -un; echo $FASTDOWNTIME_HOST")
        assert out.read().decode().split() == [L.DEPLOY_USER, host.name]
        client.close()


def test_unknown_host_key_refused(sandbox: Context) -> None:
    """With no known_hosts entry the connection is refused, not trusted on first use."""
    host = sandbox.layout.role("app")[0]
    client = ssh_client(sandbox, None)
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(host.address, L.SSH_PORT, username=L.DEPLOY_USER,
                       key_filename=str(sandbox.layout.key_file), look_for_keys=False,
                       allow_agent=False, timeout=5)


def test_changed_host_key_refused(sandbox: Context, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A known_hosts entry with another key for the address is refused as a changed key."""
    host = sandbox.layout.role("app")[0]
    other = paramiko.Ed25519Key.from_private_key_file(str(sandbox.layout.key_file))
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host.address}]:{L.SSH_PORT} {other.get_name()} {other.get_base64()}\n")
    client = ssh_client(sandbox, str(known))
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(host.address, L.SSH_PORT, username=L.DEPLOY_USER,
                       key_filename=str(sandbox.layout.key_file), look_for_keys=False,
                       allow_agent=False, timeout=5)


def test_standby_is_streaming(sandbox: Context) -> None:
    """The standby streams from the primary and replays a fresh write."""
    with connect(sandbox, L.PRIMARY_PORT, "fdt_admin") as conn, conn.cursor() as cur:
        cur.execute("SELECT state FROM pg_stat_replication")
        assert [row[0] for row in cur.fetchall()] == ["streaming"]
        cur.execute("SELECT pg_current_wal_lsn()")
        lsn = cur.fetchone()[0]
    conn.close()
    with connect(sandbox, L.STANDBY_PORT, "fdt_admin") as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        assert cur.fetchone()[0] is True
        deadline = time.monotonic() + 10
        while True:
            cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))
            if cur.fetchone()[0]:
                break
            assert time.monotonic() < deadline, "standby did not replay within 10 s"
            time.sleep(0.05)
    conn.close()


def test_pgbouncer_pause_holds_and_resume_releases(sandbox: Context) -> None:
    """PAUSE on the admin console holds a client's query; RESUME lets it finish."""
    client = connect(sandbox, L.PGBOUNCER_PORT, "app")
    client.autocommit = True
    adm = connect(sandbox, L.PGBOUNCER_PORT, "pgbouncer_admin", "pgbouncer")
    adm.autocommit = True
    done = threading.Event()

    def query() -> None:
        with client.cursor() as cur:
            cur.execute("SELECT 1")
        done.set()

    try:
        adm.cursor().execute(f"PAUSE {L.DB_NAME}")
        worker = threading.Thread(target=query)
        worker.start()
        assert not done.wait(0.5), "the query ran although the database was paused"
    finally:
        adm.cursor().execute(f"RESUME {L.DB_NAME}")
    assert done.wait(5), "the query did not finish after RESUME"
    worker.join()
    client.close()
    adm.close()


def test_pgbouncer_keeps_verifiers_not_passwords(sandbox: Context) -> None:
    """pgbouncer's userlist holds the primary's SCRAM verifiers and no password; each role
    logs in through it, reaches the primary (pgbouncer's own login, with the keys the
    client proved), and a wrong password is refused."""
    userlist = (sandbox.layout.pgbouncer_dir / "userlist.txt").read_text()
    assert not [pw for pw in sandbox.passwords.values() if pw in userlist]
    entries = [line.split(" ", 1) for line in userlist.splitlines()]
    assert [role.strip('"') for role, _ in entries] == ["app", "fragile", "fdt_admin",
                                                        "pgbouncer_admin"]
    assert all(secret.startswith('"SCRAM-SHA-256$4096:') for _, secret in entries)
    for user in ("app", "fragile", "fdt_admin"):
        conn = connect(sandbox, L.PGBOUNCER_PORT, user)
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (user,)
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=L.PGBOUNCER_PORT, user="app", dbname=L.DB_NAME,
                         password="not-the-password", connect_timeout=5)


def test_fragile_script_connection_visible(sandbox: Context) -> None:
    """The script host's fragile script holds a connection as its own database user."""
    with connect(sandbox, L.PRIMARY_PORT, "fdt_admin") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'fragile'")
        assert cur.fetchone()[0] >= 1
    conn.close()


def test_every_host_reports_first_revision(sandbox: Context) -> None:
    """Each app host's first instance answers /+health with the first revision and patch."""
    first = json.loads((sandbox.layout.base / "layout.json").read_text()).get("first")
    answers = []
    for host in sandbox.layout.role("app"):
        url = f"http://{host.address}:{L.APP_PORTS[0]}/+health"
        with urllib.request.urlopen(url, timeout=5) as response:
            answers.append(json.loads(response.read()))
    revisions = {a["revision"] for a in answers}
    assert len(revisions) == 1 and all(a["ok"] for a in answers)
    current = (sandbox.layout.role("app")[0].app_root / "current").resolve().name
    assert revisions == {current}
    if first:
        assert revisions == {first}
    assert {tuple(a["patch"]) for a in answers} == {(2200, 0, 0)}


def test_haproxy_drain_moves_every_request(sandbox: Context) -> None:
    """A drained server gets no new request; the others serve all of them, none fails."""
    sock = sandbox.layout.haproxy_socket
    drained = L.Layout.server_name("app1", L.APP_PORTS[0])

    def served(server: str) -> int:
        lines = admin(sock, "show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") == server:
                return int(row["stot"])
        raise AssertionError(f"no server {server}")

    assert admin(sock, f"set server app/{drained} state drain").strip() == ""
    try:
        assert server_states(sock)[drained] == "DRAIN"
        before = served(drained)
        for _ in range(40):
            with urllib.request.urlopen(sandbox.layout.public_url, timeout=5) as response:
                assert response.status == 200
        assert served(drained) == before
    finally:
        assert admin(sock, f"set server app/{drained} state ready").strip() == ""
