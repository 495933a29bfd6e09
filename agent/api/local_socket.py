"""The API on a Unix socket too (``<data_dir>/api.sock``), where the kernel says who is calling.

The way Docker and systemd do it: a process on the box that connects to the
socket is identified by ``SO_PEERCRED`` (its uid, which it cannot forge), so
root and the service's own user may read the daemon's state without a
token, e.g. ``sudo edge-agent status`` on a box whose API needs tokens. Only
reads (the viewer role), only for those two uids, and never over TCP: a TCP
peer's address says nothing about who it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

log = logging.getLogger("edge_agent.api")

SOCKET_NAME = "api.sock"
#: the role a trusted local peer gets: reading state, never changing it
PEER_ROLE = "viewer"
_UCRED = struct.Struct("3i")  # pid, uid, gid


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def bind_local_socket(path: Path) -> socket.socket | None:
    """A listening Unix socket at ``path`` (a stale one is replaced); None, with a warning, when impossible.

    The caller holds the data dir's lock, so a socket file already there is a
    leftover of a daemon that died, never a live one.
    """
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("local API socket %s not used: %s", path, exc.strerror)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o660)  # the service's group may connect; the peer check decides what it may read
        sock.listen(64)
    except OSError as exc:
        sock.close()
        log.warning("local API socket %s not used: %s", path, exc.strerror or exc)
        return None
    sock.setblocking(False)
    return sock


def close_local_socket(sock: socket.socket | None, path: Path) -> None:
    if sock is None:
        return
    sock.close()
    with contextlib.suppress(OSError):
        path.unlink()


def peer_uid(request: Any) -> int | None:
    """The connecting process's uid when the request came over a Unix socket; None over TCP."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None
    return int(uid)


def peer_token(request: Any) -> Any:
    """A viewer identity for root or the service's own user on the Unix socket; None otherwise."""
    uid = peer_uid(request)
    if uid is None or uid not in (0, os.getuid()):
        return None
    from agent.security.tokens import TokenInfo

    who = "root" if uid == 0 else f"uid {uid}"
    return TokenInfo(
        id=f"peer-uid{uid}",
        name=f"{who} on the local socket",
        role=PEER_ROLE,
        created_at=0.0,
        expires_at=None,
        revoked_at=None,
    )
