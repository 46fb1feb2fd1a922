"""A fault-injecting proxy on 127.0.0.1 in front of the test server: for the API fault tests.

`fault(i, path, headers)` sees the i-th POST (0-based) and returns None to forward it upstream, or
(status, headers, body) to answer it itself. Every POST is logged as (time, path, authorization, answered).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    def __init__(self, upstream: str, fault):
        self.upstream, self.fault = upstream.rstrip("/"), fault
        self.log: list[tuple] = []
        self.spans: list[tuple] = []  # (arrival, answer ready) of every POST
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    i = len(proxy.log)
                    answer = proxy.fault(i, self.path, self.headers)
                    proxy.log.append((time.monotonic(), self.path, self.headers.get("authorization"),
                                      answer[0] if answer else "forwarded"))
                t_in = time.monotonic()
                if answer is None:
                    answer = proxy.forward(self.path, body, self.headers)
                with proxy.lock:
                    proxy.spans.append((t_in, time.monotonic()))
                status, headers, data = answer
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request (a cancelled run): nothing to answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def forward(self, path: str, body: bytes, headers) -> tuple:
        root = self.upstream.removesuffix("/v1")
        req = urllib.request.Request(root + path, data=body, method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:  # the whole stream, then passed on at once
                return r.status, {"content-type": r.headers.get("content-type", "application/json")}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {"content-type": "application/json"}, e.read()

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
