"""A real HTTP(S) image server on 127.0.0.1 for the fetcher's tests."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import time
import urllib.parse

import pytest

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # magic + filler: a fetch payload


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /img, /big (declares a huge length), /endless (no length, never ends),
    /slow, /status/<code>, /chain/<n> (n redirects then /img), /to?url=<absolute URL>."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.server.hits.append((self.path, self.headers.get("Host")))
        path, _, query = self.path.partition("?")
        if path == "/img":
            return self._send(200, PNG)
        if path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            return
        if path == "/endless":
            return self._endless()
        if path == "/slow":
            time.sleep(3)
            return self._send(200, PNG)
        if path.startswith("/status/"):
            return self._send(int(path.rsplit("/", 1)[1]), b"nope")
        if path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            return self._redirect("/img" if n <= 1 else f"/chain/{n - 1}")
        if path == "/to":
            return self._redirect(urllib.parse.parse_qs(query)["url"][0])
        return self._send(404, b"unknown")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(10_000):  # 640 MB: only an aborting client stops this early
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that abort (size limit, bad certificate) are expected here


def _serve(ssl_context=None):
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.hits = []
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def http_server():
    """(base URL, server); server.hits lists (path, Host header) per request received."""
    server = _serve()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for images.test: (cert path, key path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_server(tls_cert):
    """(port, server, client SSLContext trusting the test certificate)."""
    cert, key = tls_cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = _serve(server_ctx)
    yield server.server_address[1], server, ssl.create_default_context(cafile=str(cert))
    server.shutdown()
    server.server_close()
