"""Which instance addresses a caller may dial: ``MESHWARE_ALLOWED_NETWORKS``.

Design notes
------------
Anyone who can write under the mesh prefix can publish a record whose ``url`` points anywhere.
A caller that dials whatever it reads would let such a record aim the mesh's requests (with
their credentials and bodies) at a cloud metadata service or any host outside the mesh. So every
record's host is checked against an :class:`AddressPolicy` when the record is decoded; a record
whose host is refused is skipped like any bad record (one warning), and costs only itself.

* **Default** (the variable unset): every address except the ones no mesh member can
  legitimately have and that are classic targets: link-local addresses (``169.254.0.0/16``,
  ``fe80::/10``, where cloud metadata services live: ``169.254.169.254``, ``fd00:ec2::254``),
  "this host" (``0.0.0.0/8``, ``::``), multicast and broadcast, and the metadata host names
  (``metadata.google.internal``, ``metadata``). Loopback stays allowed: development and tests
  run the whole mesh on it.
* **Set**: a comma-separated list of CIDRs (``10.0.0.0/8``, ``fd00::/8``), single addresses,
  host names (``users.internal``) and domain suffixes (``*.svc.cluster.local`` or
  ``.svc.cluster.local``). Only what the list names is allowed; ``*`` allows everything (the
  default refusals included). IPv4-mapped IPv6 addresses are judged as the IPv4 address they
  carry.
* Host names are judged by name, never resolved (the core does no I/O): with a list that
  names only networks, records must publish IP addresses. A name that resolves to a refused
  address at dial time is outside what this check can see; name your hosts in the list
  deliberately.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["DEFAULT_REFUSED", "AddressPolicy", "default_policy"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_REFUSED: tuple[str, ...] = (
    "0.0.0.0/8",  # "this host": dialing it reaches whatever listens locally on any address
    "169.254.0.0/16",  # IPv4 link-local: cloud metadata (169.254.169.254), APIPA
    "224.0.0.0/4",  # multicast
    "255.255.255.255/32",  # broadcast
    "::/128",  # unspecified
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS's IPv6 metadata endpoint
    "ff00::/8",  # multicast
)
_REFUSED_NAMES = ("metadata.google.internal", "metadata", "instance-data")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Allowed and refused instance hosts (see the module notes).

    ``allow`` empty means "anything not refused"; ``allow_all`` ignores the refusals too.
    """

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_names: frozenset[str] = frozenset()
    allow_suffixes: tuple[str, ...] = ()
    refuse_networks: tuple[IPNetwork, ...] = ()
    refuse_names: frozenset[str] = frozenset()
    allow_all: bool = False
    source: str = "the default"

    @classmethod
    def parse(cls, text: str, *, source: str = "MESHWARE_ALLOWED_NETWORKS") -> AddressPolicy:
        """A policy from a comma-separated list; raises ``ValueError`` naming a bad entry."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        allow_all = False
        for raw in text.split(","):
            item = raw.strip().lower()
            if not item:
                continue
            if item == "*":
                allow_all = True
                continue
            if item.startswith("*.") or (item.startswith(".") and len(item) > 1):
                suffix = "." + item.lstrip("*.")
                if not _valid_name(suffix[1:]):
                    raise ValueError(f"{source}: {raw.strip()!r} is not a valid domain suffix")
                suffixes.append(suffix)
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _valid_name(item):
                raise ValueError(
                    f"{source}: {raw.strip()!r} is neither a CIDR, an IP address nor a host name"
                )
            names.add(item)
        if not (networks or names or suffixes or allow_all):
            raise ValueError(f"{source} is set but names no network or host")
        return cls(
            allow_networks=tuple(networks),
            allow_names=frozenset(names),
            allow_suffixes=tuple(suffixes),
            allow_all=allow_all,
            source=source,
        )

    @property
    def restricted(self) -> bool:
        """Whether an allow-list is in force (else: anything not refused)."""
        return not self.allow_all and bool(
            self.allow_networks or self.allow_names or self.allow_suffixes
        )

    def refusal(self, host: str) -> str | None:
        """Why ``host`` (a name, an IPv4 address or a bracketless IPv6 address) is refused."""
        if self.allow_all:
            return None
        address = _address(host)
        if address is None:
            name = host.lower().rstrip(".")
            if self.restricted:
                if name in self.allow_names or any(name.endswith(s) for s in self.allow_suffixes):
                    return None
                return f"host {name!r} is not in {self.source}"
            if name in self.refuse_names:
                return f"host {name!r} is a metadata service name, refused by {self.source}"
            return None
        if self.restricted:
            if any(address in n for n in self.allow_networks if n.version == address.version):
                return None
            return f"address {address} is not in {self.source}"
        for network in self.refuse_networks:
            if network.version == address.version and address in network:
                return (
                    f"address {address} is in {network}, refused by {self.source} "
                    "(set MESHWARE_ALLOWED_NETWORKS to allow it)"
                )
        return None


def default_policy() -> AddressPolicy:
    """Anything but link-local, metadata, multicast and "this host" addresses."""
    return AddressPolicy(
        refuse_networks=tuple(ipaddress.ip_network(n) for n in DEFAULT_REFUSED),
        refuse_names=frozenset(_REFUSED_NAMES),
        source="meshware's default address policy",
    )


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _valid_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in label)
        for label in labels
    )
