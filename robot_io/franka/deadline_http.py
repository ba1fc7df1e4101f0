"""HTTP POST with a total deadline over one kept-alive connection (stdlib `http.client`).

A socket timeout bounds one read, not a request: a server that answers one byte every 0.1 s
keeps a per-read timeout of 1 s waiting forever. Here every connect, send and receive of a
request first sets the socket timeout to what is left until the request's deadline (and fails
at once when nothing is left), so the whole request — connecting, sending, the status line,
headers and body — ends by its deadline. Answers larger than `max_answer_bytes` are refused.

Errors: `TimeoutError` when the deadline passes, `AnswerTooLarge`, and `OSError` /
`http.client.HTTPException` for everything else (refused, reset, malformed answer). After any
error the connection is dropped; the next request opens a new one.
"""

from __future__ import annotations

import http.client
import math
import select
import socket
import ssl
import time
import urllib.parse

MAX_ANSWER_BYTES = 1 << 20  # the largest Franka answer (getstate) is ~1 kB


class AnswerTooLarge(http.client.HTTPException):
    """The answer's body exceeds the client's limit."""


class _DeadlineMixin:
    """Socket behaviour: each blocking call may only use the time left until `deadline`."""

    deadline: float = math.inf

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def recv_into(self, *args, **kwargs):
        self._arm()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self._arm()
        return super().recv(*args, **kwargs)

    def send(self, *args, **kwargs):
        self._arm()
        return super().send(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self._arm()  # a plain socket's timeout bounds the whole sendall (TLS: each send is armed)
        return super().sendall(*args, **kwargs)

    def do_handshake(self, *args, **kwargs):
        self._arm()
        return super().do_handshake(*args, **kwargs)


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


class _Connection(http.client.HTTPConnection):
    """An HTTP(S) connection whose socket honours a per-request deadline."""

    def __init__(self, host: str, port: int | None, tls: bool):
        super().__init__(host, port or (443 if tls else 80))
        self._tls = ssl.create_default_context() if tls else None
        if self._tls is not None:
            self._tls.sslsocket_class = _DeadlineSSLSocket
        self.deadline = math.inf

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed before connecting")
        plain = socket.create_connection((self.host, self.port), left)
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline = self.deadline
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
            sock.deadline = self.deadline
            sock.do_handshake()
        self.sock = sock

    def set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        if self.sock is not None:
            self.sock.deadline = deadline

    def looks_closed(self) -> bool:
        """Whether a kept-alive connection was closed by the server (readable while idle = EOF)."""
        if self.sock is None:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class DeadlineHTTP:
    """POSTs to one server; every request ends by its deadline (see the module docstring).

    Not thread-safe: use one instance per thread.
    """

    def __init__(self, base_url: str, max_answer_bytes: int = MAX_ANSWER_BYTES):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL must be http(s)://host[:port]/..., got {base_url!r}")
        self._host, self._port, self._tls = parts.hostname, parts.port, parts.scheme == "https"
        self._path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self._max = int(max_answer_bytes)
        self._conn: _Connection | None = None

    def post(self, route: str, body: bytes | None, deadline: float,
             content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, body) of POST `<base path><route>`, finished by `deadline` (time.monotonic())."""
        if self._conn is not None and self._conn.looks_closed():
            self.close()
        if self._conn is None:
            self._conn = _Connection(self._host, self._port, self._tls)
        conn = self._conn
        conn.set_deadline(deadline)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            conn.request("POST", self._path + route, body=body if body is not None else b"", headers=headers)
            response = conn.getresponse()
            data = response.read(self._max + 1)
            if len(data) > self._max:
                raise AnswerTooLarge(f"answer larger than {self._max} bytes")
            if response.will_close or not response.isclosed():
                self.close()
            return response.status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
