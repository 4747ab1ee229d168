"""Loopback ports for the servers tests and benchmarks start (``serving.torchserve.free_ports``)."""
import socket

from serving.torchserve import free_ports


def test_a_port_range_gives_each_port_once_and_skips_those_in_use(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken_port = taken.getsockname()[1]
        monkeypatch.setenv("TAGGER_PORT_RANGE", f"{taken_port - 2}-{taken_port + 5}")
        first, second = free_ports(3), free_ports(3)
    ports = first + second
    assert len(set(ports)) == 6
    assert taken_port not in ports
    assert all(taken_port - 2 <= p <= taken_port + 5 for p in ports)


def test_without_a_range_the_kernel_picks(monkeypatch):
    monkeypatch.delenv("TAGGER_PORT_RANGE", raising=False)
    ports = free_ports(4)
    assert len(set(ports)) == 4
    assert all(p > 0 for p in ports)
