#!/usr/bin/env python3
"""A stand-in HTTP API server for itest_proxy.c, on loopback only.

Prints its port on stdout, then answers every request with a JSON echo of
what it received (method, path, headers, body), except:
  .../slow         waits 3 s first
  .../status/<n>   answers with status n
  .../big?n=<n>    answers with n bytes of "x"
Each request line is appended to the log file given as argv[1]."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOG = sys.argv[1]


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path}\n")
        url = urlsplit(self.path)
        status = 200
        if url.path.endswith("/slow"):
            time.sleep(3)
        if "/status/" in url.path:
            status = int(url.path.rsplit("/", 1)[1])
        if url.path.endswith("/big"):
            out = b"x" * int(parse_qs(url.query).get("n", ["0"])[0])
        else:
            out = json.dumps({
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Upstream", "python")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
print(server.server_address[1], flush=True)
server.serve_forever()
