"""Addresses: whether one is this machine's loopback (the gateway asks no token of it; the cluster's proxy bound
to it is reachable from here only).

    is_loopback("127.0.0.1"), is_loopback("::ffff:127.0.0.1"), is_loopback("localhost")   # all True
"""
from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """True for a loopback IPv4 or IPv6 address (an IPv4-mapped one too, brackets allowed) and ``localhost``."""
    address = address.strip().strip("[]")
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)
