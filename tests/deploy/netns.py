"""Hosts of their own for deployment tests: Linux network namespaces joined by veth links.

The coordinator stays in the test's own namespace, on a bridge address; every site gets a
namespace with its own loopback, its own address on the bridge's subnet and one veth link to the
bridge, so it reaches the coordinator only over that link, as a hospital reaches it over the
network. Taking a link down cuts a site off mid-round. Names and the subnet carry the test
process's pid, so two test runs on one machine do not collide.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field


class NamespacesNotPermitted(RuntimeError):
    """This machine does not let the test create network namespaces (no CAP_NET_ADMIN, no iproute2)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Hosts:
    """A bridge for the coordinator and one namespace per site; ``close()`` removes them all."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    subnet: str = field(default_factory=lambda: f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}")
    sites: dict[str, str] = field(default_factory=dict)  # site name -> namespace
    _links: dict[str, str] = field(default_factory=dict)  # site name -> bridge-side veth

    @property
    def bridge(self) -> str:
        return f"fsbr{self.tag}"

    @property
    def coordinator(self) -> str:
        """The coordinator's address on the sites' network."""
        return f"{self.subnet}.1"

    def open(self) -> Hosts:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except (RuntimeError, FileNotFoundError) as error:
            raise NamespacesNotPermitted(str(error)) from error
        _ip("addr", "add", f"{self.coordinator}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_site(self, name: str) -> str:
        """A namespace for ``name`` with loopback, an address and a link to the bridge; its name."""
        index = len(self.sites)
        namespace = f"fs{self.tag}s{index}"
        outside, inside = f"fs{self.tag}h{index}", f"fs{self.tag}n{index}"
        try:
            _ip("netns", "add", namespace)
        except RuntimeError as error:
            raise NamespacesNotPermitted(str(error)) from error
        self.sites[name] = namespace
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self._links[name] = outside
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{self.subnet}.{10 + index}/24", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        return namespace

    def cut(self, name: str) -> None:
        """Take the site's link down: its packets to and from the coordinator stop."""
        _ip("link", "set", self._links[name], "down")

    def reaches_coordinator(self, name: str, port: int) -> bool:
        """Whether a TCP connection from inside the site's namespace reaches the coordinator."""
        probe = f"import socket; socket.create_connection(('{self.coordinator}', {port}), timeout=3).close()"
        done = subprocess.run(
            ["ip", "netns", "exec", self.sites[name], "python3", "-c", probe], capture_output=True, timeout=30
        )
        return done.returncode == 0

    def close(self) -> None:
        for namespace in self.sites.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        for link in self._links.values():  # gone with their peer already, unless a namespace lingered
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
