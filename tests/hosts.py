"""Separate hosts on this machine for tests: each a network namespace with its own address on a private bridge.

    with Hosts(3) as hosts:            # 10.77.0.2, 10.77.0.3, 10.77.0.4
        proc = hosts[0].popen(["python", "-m", "mnist_keras", ...])   # host name mkh<pid>-0
        hosts[1].kill()                # SIGKILL every process of the host
        hosts[2].cut()                 # its link down: packets to and from it are lost, no reset

The bridge has no address and no namespace has a default route, so nothing leaves the bridge: the hosts reach
each other and nothing else (not even this machine's own addresses). Names carry the creating process's id
(`mkh<pid>-N`), so a later Hosts removes what a killed test process left; the context manager, and atexit,
remove everything on the other exit paths. Needs root (or CAP_NET_ADMIN) and `ip` (iproute2): `skip_reason()`
says why not.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.77.0"  # the bridge's /24: host N is .N+2; other Hosts use bridges of their own, so it never clashes


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def skip_reason() -> str | None:
    """Why namespaces cannot be made here (not root, no iproute2, a sandbox that forbids them), else None."""
    if shutil.which("ip") is None:
        return "no `ip` command (apt-get install iproute2)"
    probe = f"mkh{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"network namespaces are not allowed here: {made.stderr.strip()[:200]}"
    _ip("netns", "del", probe, check=False)
    return None


class Host:
    """One namespace: its name, address, and the host-side end of its link on the bridge."""

    def __init__(self, index: int, prefix: str):
        self.index, self.name = index, f"{prefix}-{index}"
        self.address = f"{SUBNET}.{index + 2}"
        self.link = f"{prefix}v{index}"  # the host side of the veth pair, on the bridge (<= 15 characters)

    def command(self, argv: list) -> list[str]:
        """`argv` run on this host: in its network namespace, under its own host name (a UTS namespace)."""
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.name, *map(str, argv)]

    def popen(self, argv: list, **kwargs) -> subprocess.Popen:
        """`argv` run on this host (`ip netns exec`), in a new session so that kill() gets all of it."""
        return subprocess.Popen(self.command(argv), start_new_session=True, **kwargs)

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.name, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Every process of the host, as a machine that loses power."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def cut(self) -> None:
        """The host's link down: its peers' packets go nowhere (no connection reset), as a pulled cable."""
        _ip("link", "set", self.link, "down")

    def reconnect(self) -> None:
        _ip("link", "set", self.link, "up")

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.address})"


class Hosts:
    """N hosts on one bridge; a context manager that removes them (and ends their processes) on exit."""

    def __init__(self, count: int):
        self.prefix = f"mkh{os.getpid()}"
        self.bridge = f"{self.prefix}br"
        self.hosts = [Host(index, self.prefix) for index in range(count)]

    def __enter__(self) -> list[Host]:
        remove_left_behind()
        atexit.register(self.remove)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                inside = f"{self.prefix}i{host.index}"
                _ip("netns", "add", host.name)
                _ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", host.name)
                _ip("link", "set", host.link, "master", self.bridge)
                _ip("link", "set", host.link, "up")
                _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", inside)
                _ip("-n", host.name, "link", "set", inside, "up")
                _ip("-n", host.name, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self.hosts

    def __exit__(self, *exc) -> None:
        self.remove()
        atexit.unregister(self.remove)

    def remove(self) -> None:
        _remove(self.prefix)


def _remove(prefix: str) -> None:
    """End the processes of every namespace named `prefix-N`, delete the namespaces (their veth pairs go with
    them) and the bridge."""
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    mine = [name for name in names if name.startswith(f"{prefix}-")]
    for name in mine:
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    deadline = time.monotonic() + 10
    for name in mine:
        while _ip("netns", "pids", name, check=False).stdout.split() and time.monotonic() < deadline:
            time.sleep(0.05)
        _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():  # a pair left half made, the bridge
        link = re.match(r"\d+: ([^:@]+)", line)
        if link and link.group(1).startswith(prefix):
            _ip("link", "del", link.group(1), check=False)


def remove_left_behind() -> None:
    """What Hosts of test processes that no longer exist left (a test process killed -9)."""
    names = _ip("netns", "list", check=False).stdout + _ip("-o", "link", "show", check=False).stdout
    for pid in set(re.findall(r"\bmkh(\d+)", names)):
        if not Path(f"/proc/{pid}").exists():
            _remove(f"mkh{pid}")
