#!/usr/bin/python3
"""Drive a real browser against rdvd's rendezvous WebSocket port.

Serves ws_browser.html from a loopback HTTP server (Python's http.server),
starts Debian's chromium headless on it, and waits for the page to report
its result on /result?... . Prints the result's key=value pairs, one per
line. Exit status: 0 = a result arrived, 1 = none (timeout or browser
failure), 77 = no chromium installed (the caller skips).

    ws_browser.py --ws-port P --key K [--chromium PATH] [--timeout S]
"""
import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


class Handler(http.server.BaseHTTPRequestHandler):
    result = None
    got = threading.Event()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ws_browser.html":
            with open(os.path.join(HERE, "ws_browser.html"), "rb") as f:
                body = f.read()
            self.reply(200, "text/html; charset=utf-8", body)
        elif url.path == "/result":
            Handler.result = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
            self.reply(200, "text/plain", b"ok")
            Handler.got.set()
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ws-port", type=int, required=True)
    p.add_argument("--key", default="")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    if not os.access(a.chromium, os.X_OK):
        print("error=no chromium at %s" % a.chromium)
        return 77
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="rdvd-chromium-")
    url = "http://127.0.0.1:%d/ws_browser.html?%s" % (
        httpd.server_address[1], urllib.parse.urlencode({"port": a.ws_port, "key": a.key}))
    cmd = [a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--user-data-dir=" + profile, url]
    log = open(os.path.join(profile, "chromium.log"), "w+")
    browser = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ok = Handler.got.wait(a.timeout)
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
        httpd.shutdown()
    if not ok:
        log.seek(0)
        tail = log.read()[-2000:]
        print("error=no result from the browser within %.0f s" % a.timeout)
        print("chromium_log=" + tail.replace("\n", " | "))
    log.close()
    shutil.rmtree(profile, ignore_errors=True)
    if not ok:
        return 1
    for k, v in Handler.result:
        print("%s=%s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
