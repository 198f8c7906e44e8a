"""A local HTTP file server and an unreachable URL: downloads tested without the network."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pooch

__all__ = ["FileServer", "closed_port_url", "xxh128"]


class FileServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1, in 64 kB pieces ``delay`` seconds apart.

    ``length=False`` sends no Content-Length (the size is known only at the end);
    names in ``truncate`` stop halfway (an interrupted transfer).
    """

    def __init__(
        self, files: dict[str, bytes], delay: float = 0.0, length: bool = True,
        truncate: tuple[str, ...] = (),
    ):  # fmt: skip
        self.files, self.truncate, self.requests = files, truncate, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                self.send_response(200)
                if length:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.close_connection = True  # the end of the file is the end of the stream
                self.end_headers()
                if name in server.truncate:  # the promised length never arrives
                    data = data[: len(data) // 2]
                try:
                    for start in range(0, len(data), 1 << 16):
                        self.wfile.write(data[start : start + (1 << 16)])
                        self.wfile.flush()
                        time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):  # the client cancelled
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads, self.httpd.block_on_close = True, False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url(name: str = "gone.pt") -> str:
    """A URL nothing answers at: what a download looks like without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def xxh128(data: bytes, tmp_path) -> str:
    f = tmp_path / "hash-me"
    f.write_bytes(data)
    return pooch.file_hash(str(f), alg="xxh128")
