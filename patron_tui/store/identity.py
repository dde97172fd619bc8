"""Who is at the keyboard: the Unix login name is the operator."""

from __future__ import annotations

import os
import pwd
import socket


def current_login() -> str:
    """The login name of the effective user (not spoofable through $USER)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        return f"uid{os.geteuid()}"


def host_name() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
