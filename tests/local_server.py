"""A file server on 127.0.0.1 that misbehaves on request, for the downloader's tests.

`server.files[path] = bytes` serves a file (honouring `Range`); `server.quirks[path]` changes how:
  status      answer only this status (404, 416, 500)
  ranges      False: ignore Range (answer 200 with the whole file)
  range       a Content-Range header to send with a 206, whatever was asked ("bytes 5-9/10")
  length      the Content-Length to announce (None: send none)
  body        the bytes to send instead of the (ranged) file
  delay       seconds to wait before answering
  cut         bytes of the body to send before dropping the connection (once)
  redirect    a Location to answer 302 with
  etag        an ETag to send
Every request is logged in `server.requests` as (path, Range header, If-Range header).
"""

import http.server
import threading
import time
from contextlib import contextmanager


class LocalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.quirks, self.requests = {}, {}, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        pass  # a client that hung up on purpose (a refused answer, a timeout)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        s, q = self.server, self.server.quirks.get(self.path, {})
        s.requests.append((self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        time.sleep(q.get("delay", 0))
        if "redirect" in q:
            self.send_response(302)
            self.send_header("Location", q["redirect"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = s.files.get(self.path)
        if data is None or "status" in q:
            self.send_error(q.get("status", 404))
            return
        start, asked = 0, self.headers.get("Range")
        if "range" in q:
            self.send_response(206)
            self.send_header("Content-Range", q["range"])
        elif asked and q.get("ranges", True):
            start = int(asked.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = q.get("body", data[start:])
        length = q.get("length", len(body))
        if length is not None:
            self.send_header("Content-Length", str(length))
        if "etag" in q:
            self.send_header("ETag", q["etag"])
        self.end_headers()
        if "cut" in q:
            body = body[: q.pop("cut")]
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()


@contextmanager
def local_server():
    s = LocalServer()
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.shutdown()
        s.server_close()
