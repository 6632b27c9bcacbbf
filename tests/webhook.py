"""A webhook of our own: an HTTP server on 127.0.0.1 in a thread, keeping every POST.

``with Webhook() as webhook:`` serves until the block ends; ``webhook.url`` is its address
(its path holds a token, as a chat service's would)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every POST and answers from ``script``: each
    entry a status, or ``(seconds, status)`` to answer late; 200 once it runs out."""

    def __init__(self) -> None:
        self.script: list[int | tuple[float, int]] = []
        self.posts: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append(json.loads(body))
                hook.headers.append(dict(self.headers))
                answer = hook.script.pop(0) if hook.script else 200
                if isinstance(answer, tuple):
                    time.sleep(answer[0])
                    answer = answer[1]
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, *_args: Any) -> None:
                return  # a late answer to a client that gave up

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)

    @property
    def events(self) -> list[str]:
        """The events POSTed, in order."""
        return [post["event"] for post in self.posts]

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
