"""The sandbox's haproxy on 127.0.0.1, in front of every app host's two instance slots.

It runs as the ``deploy`` user on the LB host, with its admin socket in the LB
host's directory (reached over SSH by the orchestrator). Each app host has a
server per instance port; the first slot starts ready, the idle one in
maintenance. Health checks ask ``/+alive``, which answers without the database:
a check of ``/+health`` would be held through a window like any request, time
out, and have haproxy mark every server down in the middle of it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from orchestrator.errors import SandboxError
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Component, Context
from orchestrator.sandbox.procs import chown_tree, pid_alive, run, stop_pid, wait_until

START_DEADLINE_S = 20

_HEAD = """\
global
    stats socket {socket} mode 600 level admin
    stats timeout 1m
    maxconn 4000

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 60s
    timeout queue 60s
    timeout http-request 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend public
    bind 127.0.0.1:{port}
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /+alive
    http-check expect status 200
    default-server inter 1s fastinter 200ms downinter 500ms fall 2 rise 1
"""


def admin(socket_path: Path, command: str, timeout: float = 2.0) -> str:
    """Send one command to haproxy's admin socket and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def server_states(socket_path: Path, backend: str = "app") -> dict[str, str]:
    """``{server: status}`` from ``show stat`` (UP, DOWN, MAINT, DRAIN ...)."""
    lines = admin(socket_path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    states = {}
    for line in lines[1:]:
        if not line:
            continue
        row = dict(zip(header, line.split(","), strict=False))
        if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND"):
            states[row["svname"]] = row["status"]
    return states


class Haproxy(Component):
    """haproxy listening on the public port, with an admin socket and health checks."""

    name = "haproxy"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.dir = ctx.layout.haproxy_socket.parent
        self.socket = ctx.layout.haproxy_socket
        self.pidfile = self.dir / "haproxy.pid"
        self.config = self.dir / "haproxy.cfg"  # [lb] haproxy_config names it too
        self.log = ctx.layout.logs / "haproxy.log"

    def ports(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", L.PUBLIC_PORT)]

    def is_up(self) -> bool:
        return pid_alive(self.pidfile) is not None and self._answers()

    def _answers(self) -> bool:
        try:
            return "Name: HAProxy" in admin(self.socket, "show info")
        except OSError:
            return False

    def render(self) -> str:
        lines = [_HEAD.format(socket=self.socket, port=L.PUBLIC_PORT)]
        for host in self.ctx.layout.role("app"):
            for slot, port in enumerate(L.APP_PORTS):
                idle = " disabled" if slot else ""
                lines.append(f"    server {L.Layout.server_name(host.name, port)} "
                             f"{host.address}:{port} check{idle}\n")
        return "".join(lines)

    def up(self) -> None:
        if self.is_up():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.render())
        chown_tree(self.dir, L.DEPLOY_USER)
        self.prepare_log(L.DEPLOY_USER)
        run(["haproxy", "-c", "-q", "-f", str(self.config)], component=self.name, log=self.log)
        # haproxy -D writes its own pid file; stderr (startup warnings) goes to the log.
        run(["sh", "-c", 'exec haproxy -D -f "$1" -p "$2" 2>>"$3"', "haproxy",
             str(self.config), str(self.pidfile), str(self.log)],
            component=self.name, user=L.DEPLOY_USER, log=self.log)
        wait_until(self._answers, deadline_s=START_DEADLINE_S, component=self.name,
                   what="answering on its admin socket", log=self.log)
        expected = {L.Layout.server_name(h.name, L.APP_PORTS[0])
                    for h in self.ctx.layout.role("app")}
        wait_until(lambda: expected <= {s for s, st in server_states(self.socket).items()
                                        if st == "UP"},
                   deadline_s=START_DEADLINE_S, component=self.name,
                   what="seeing every app host's first instance UP", log=self.log)

    def down(self) -> None:
        stop_pid(self.pidfile, component=self.name)

    def status(self) -> dict[str, Any]:
        out = {**super().status(), "address": "127.0.0.1", "port": L.PUBLIC_PORT,
               "pid": pid_alive(self.pidfile), "admin_socket": str(self.socket)}
        if out["state"] == "up":
            try:
                out["servers"] = server_states(self.socket)
            except OSError as exc:
                raise SandboxError(self.name, f"admin socket: {exc}", str(self.log)) from exc
        return out
