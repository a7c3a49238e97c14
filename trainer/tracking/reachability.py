"""Whether a tracking store on the network answers, found out in seconds: ``check_store_answers``
(raises ``StoreUnreachable`` with a message fit to show) and ``store_problem`` (that message, or
None).

MLflow itself waits far too long for a dead store: its SQL stores retry creating the engine 10
times with a growing pause (~100 s) and libpq waits forever on a server that accepts the
connection but never replies (measured: 207 s before a raw ``OperationalError``); its HTTP client
retries too. So before a client is made, the store's host is asked once, with a short timeout,
and the answer is kept for a few seconds: a TCP connection, then for PostgreSQL an SSL request
(the server replies with one byte), for MySQL the server's greeting, for https a TLS handshake,
for http a ``HEAD /health``. Any reply counts: a refusal or an error page still means the server
runs. Local stores (SQLite) are not probed."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from trainer.redaction import redact_text

PROBE_TIMEOUT_S = 5.0
ANSWERED_KEEP_S = 10.0  # a store that answered is not asked again for this long
SILENT_KEEP_S = 15.0  # nor is one that did not (each page render would wait again otherwise)
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "http": 80, "https": 443}
_PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest: answered 'S' or 'N'


class StoreUnreachable(RuntimeError):
    """The tracking store does not answer. ``str(err)`` says so with the URI redacted and what to
    do; ``uri`` is the redacted URI, ``reason`` e.g. 'timed out after 5 s'. Not an ``OSError``:
    handlers of file errors ("no config logged yet") must not take it for one of theirs."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = redact_text(uri)
        self.reason = reason
        super().__init__(
            f"The tracking store at {self.uri} does not answer ({reason}): check that the server "
            "runs, or unset MLFLOW_TRACKING_URI to use the local store."
        )


@dataclass(frozen=True)
class _Endpoint:
    kind: str  # postgresql, mysql, http, https, or another database name
    host: str
    port: int


@dataclass
class _Answer:
    reason: str | None  # None: it answered
    at: float


_ANSWERS: dict[_Endpoint, _Answer] = {}
_LOCK = threading.Lock()


def _endpoint(uri: str) -> _Endpoint | None:
    """Host and port of a network store; None for a local one (SQLite, files) or no host."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    kind = scheme.split("+", 1)[0]  # postgresql+psycopg2 -> postgresql
    if not kind or kind in ("sqlite", "file"):
        return None
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port: MLflow reports it
        return None
    if not host:
        return None  # e.g. a PostgreSQL Unix socket (?host=/run/postgresql): no TCP to probe
    port = port or DEFAULT_PORTS.get(kind)
    return _Endpoint(kind, host, port) if port else None


def _probe(endpoint: _Endpoint, timeout: float) -> str | None:
    """Why the endpoint does not answer within ``timeout`` seconds, or None when it does."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except TimeoutError:
        return f"timed out after {timeout:g} s"
    except ConnectionRefusedError:
        return f"connection refused at {endpoint.host}:{endpoint.port}"
    except socket.gaierror:
        return f"unknown host {endpoint.host}"
    except OSError as err:
        return f"{endpoint.host}:{endpoint.port}: {err.strerror or err}"
    with sock:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if endpoint.kind == "https":
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # any reply
                with context.wrap_socket(sock, server_hostname=endpoint.host):
                    return None
            if endpoint.kind == "postgresql":
                sock.sendall(_PG_SSL_REQUEST)
            elif endpoint.kind == "http":
                sock.sendall(f"HEAD /health HTTP/1.0\r\nHost: {endpoint.host}\r\n\r\n".encode())
            elif endpoint.kind != "mysql":
                return None  # another database: its port accepted the connection
            reply = sock.recv(1)  # MySQL greets first; the others answer the request sent
        except ssl.SSLError:
            return None  # it answered, if not the way we hoped: MLflow reports the rest
        except TimeoutError:
            return f"timed out after {timeout:g} s"
        except OSError as err:
            return f"{endpoint.host}:{endpoint.port}: {err.strerror or err}"
    return None if reply else "the server closed the connection without a reply"


def _reason(uri: str, timeout: float | None) -> str | None:
    endpoint = _endpoint(uri)
    if endpoint is None:
        return None
    with _LOCK:
        known = _ANSWERS.get(endpoint)
    keep = SILENT_KEEP_S if known is not None and known.reason else ANSWERED_KEEP_S
    if known is None or time.monotonic() - known.at > keep:
        waited = PROBE_TIMEOUT_S if timeout is None else timeout
        known = _Answer(_probe(endpoint, waited), time.monotonic())
        with _LOCK:
            _ANSWERS[endpoint] = known
    return known.reason


def check_store_answers(uri: str, timeout: float | None = None) -> None:
    """Raise ``StoreUnreachable`` when the store at ``uri`` (a network one) does not answer within
    ``timeout`` seconds (default ``PROBE_TIMEOUT_S``). Answers are kept a few seconds (see the
    module docstring)."""
    reason = _reason(uri, timeout)
    if reason is not None:
        raise StoreUnreachable(uri, reason)


def store_problem(uri: str, timeout: float | None = None) -> str | None:
    """``StoreUnreachable``'s message when the store at ``uri`` does not answer; None when it
    answers or is local."""
    reason = _reason(uri, timeout)
    return None if reason is None else str(StoreUnreachable(uri, reason))


def forget_answers() -> None:
    """Ask every store again on the next check (tests; a "retry" button)."""
    with _LOCK:
        _ANSWERS.clear()
