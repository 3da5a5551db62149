"""The embedded engine in a network namespace of its own: no TCP port of it is reachable from the host.

The engine answers on a Unix socket (a file: reachable across network namespaces), but vLLM's CPU
worker also opens torch's gloo listeners on loopback, even at world size 1. Started through
``unshare --user --map-root-user --net`` (util-linux; an unprivileged user namespace), the engine
gets a loopback of its own, brought up by ``python -m obliviate.proxy.netns -- CMD...`` before it
execs the engine: its listeners live there, and no other process on the host can connect to them.

Where user namespaces are not allowed (some container runtimes forbid them), ``engine_private_network:
auto`` falls back to the host's loopback and logs it; ``on`` refuses to start instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from functools import lru_cache

logger = logging.getLogger(__name__)

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sh22x"  # struct ifreq: the name, then the flags in its 24-byte union
_UNSHARE = ("--user", "--map-root-user", "--net", "--")


def loopback_up() -> None:
    """Bring this network namespace's loopback interface up (a new namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0)))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def wrap(command: list[str]) -> list[str]:
    """``command`` run in a new user and network namespace whose loopback is up."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("unshare (util-linux) is not installed")
    return [unshare, *_UNSHARE, sys.executable, "-m", "obliviate.proxy.netns", "--", *command]


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this host lets us start a process in a private network namespace (tried once)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(  # noqa: S603 - fixed argv
            wrap([sys.executable, "-c", "pass"]), capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def use_private_network(mode: str) -> bool:
    """The ``engine_private_network`` setting resolved on this host: "on", "off" or "auto"."""
    if mode == "off":
        return False
    if available():
        return True
    if mode == "on":
        raise RuntimeError("engine_private_network is 'on' but this host does not allow a private network namespace")
    logger.warning(
        "no private network namespace for the engine on this host (user namespaces not allowed?): "
        "its worker's gloo listeners are on the host's loopback"
    )
    return False


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m obliviate.proxy.netns -- COMMAND [ARGS...]")
    loopback_up()
    os.execvp(args[0], args)  # noqa: S606 - the engine's fixed argv


if __name__ == "__main__":
    main()
