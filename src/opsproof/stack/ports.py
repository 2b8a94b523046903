"""Loopback port selection: a free port, or a clear error when an asked-for port is busy."""

from __future__ import annotations

import socket

from opsproof.errors import UsageError


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    # Also refuse a port something is already listening on via another address family/socket.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    avoid = avoid or set()
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid and port != 5432 and is_free(port, host):
            return port
    raise UsageError("no free loopback port found")


def claim(port: int | None, avoid: set[int] | None = None) -> int:
    """The asked-for port if free (else exit 2), or a free one."""
    if port is None or port == 0:
        return free_port(avoid=avoid)
    if not is_free(port):
        raise UsageError(f"port {port} on 127.0.0.1 is busy; pick another or omit --port for a free one")
    return port
