"""The kernel's accept queue of this process's listening sockets: how many new connections wait to be accepted.
Where a saturated process falls behind first (its loop still turns while they wait for seconds), so shedding reads
it (overload.py). Linux only: TCP_INFO on a listening socket (`tcpi_unacked`), one system call per socket."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys

TCP_LISTEN = 10  # tcp_info's tcpi_state of a listening socket


class AcceptQueue:
    """How many connections wait in the kernel's accept queue of this process's listening TCP sockets (Linux's
    TCP_INFO on a listening socket: `tcpi_unacked`). Where a saturated process falls behind first: new connections
    wait there for seconds while its loop still turns. Found once they exist (uvicorn listens after start-up)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._looked_at = -1.0

    def length(self, now: float) -> int | None:
        """Connections waiting, or None where that cannot be read (no listening socket found, not Linux)."""
        queues = self._queues()
        if (len(queues) < len(self.fds) or not self.fds) and now - self._looked_at >= 1.0 and sys.platform == "linux":
            # None found yet, or one closed (or its number reused): look again, at most once a second. Until then
            # the listeners still open are read; a listener gone is no reason to read nothing (shedding would then
            # go on the CPU share alone).
            self._looked_at = now
            self.fds = [fd for fd in _socket_fds() if _listening(fd)]
            queues = self._queues()
        return sum(queues) if queues else None

    def _queues(self) -> list[int]:
        infos = (_tcp_info(fd) for fd in self.fds)
        # tcpi_unacked: the accept queue, on a listener
        return [struct.unpack_from("I", info, 24)[0] for info in infos if info is not None and info[0] == TCP_LISTEN]


def _socket_fds() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.append(int(name))
    return found


def _listening(fd: int) -> bool:
    info = _tcp_info(fd)
    return info is not None and info[0] == TCP_LISTEN


def _tcp_info(fd: int) -> bytes | None:
    """The socket's TCP_INFO, read without taking the descriptor over (None: not a TCP socket any more)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except OSError:
        return None
    finally:
        sock.detach()
