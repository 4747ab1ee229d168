"""The cluster on one machine: PostgreSQL, TorchServe, N gateway replicas on one store and one photo folder, and
nginx in front (``make serve-cluster``; ``make status``, ``make stop``).

    python -m serving serve-cluster [--replicas 2] [--var DIR]

    nginx 127.0.0.1:7777 -> gateway replicas 127.0.0.1:7781, :7782, ... -> TorchServe 127.0.0.1:8080
                                   \\-> PostgreSQL 127.0.0.1:5433 (var/run/postgres), photos in var/images

Running it again starts only what is missing (a killed replica comes back; nginx's upstream list follows
``--replicas``; a new ``--listen`` or ``--hosts`` restarts the replicas when it changes who may call them).
Beyond loopback, nginx and the replicas answer only to the host names of this machine (its name, and with
``--listen 0.0.0.0`` its addresses) and those ``--hosts`` adds; a request naming another host is refused (421).
Each replica
is one gunicorn (its run folder ``var/run/gateway-<port>``); every replica opens the same database, so on several
machines the same command line with a shared ``--var`` photo folder (NFS) and one database works the same way.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path

import psutil

from serving import torchserve
from serving.nginx import NginxRun
from serving.postgres import PostgresRun
from serving.stack import Stack, gateway_pid, serve, start_gateway, stop_gateway
from serving.torchserve import Ports
from tagger import REPO
from tagger.layout import DataDir
from tagger.meta import save_json
from tagger.net import FIRST_REPLICA_PORT, GATEWAY_PORT, POSTGRES_PORT, host_name, is_loopback, parse_hosts

PROXY_PORT = GATEWAY_PORT  # nginx takes the gateway's address; the replicas listen from FIRST_REPLICA_PORT on


@dataclass(frozen=True)
class Cluster:
    var_dir: Path = REPO / "var"
    replicas: int = 2
    proxy_port: int = PROXY_PORT
    proxy_host: str = "127.0.0.1"  # beyond loopback (0.0.0.0, a LAN address): every request needs a token
    replica_ports: tuple[int, ...] = ()  # default: FIRST_REPLICA_PORT, +1, ...
    postgres_port: int = POSTGRES_PORT
    ports: Ports = field(default_factory=Ports)  # TorchServe's
    model_store: Path = REPO / "model_store"
    gateway_workers: int = 2
    hosts: tuple[str, ...] = ()  # host names answered beyond this machine's own (a DNS alias, a NAT address)
    tls_cert: str | None = None  # PEM certificate and key: nginx terminates TLS (https://, plain HTTP redirected)
    tls_key: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "var_dir", Path(self.var_dir).resolve())
        for name in ("tls_cert", "tls_key"):  # "" (make serve-cluster TLS_CERT=) turns TLS off
            object.__setattr__(self, name, getattr(self, name) or None)
        object.__setattr__(self, "hosts", parse_hosts(self.hosts))
        if not self.replica_ports:
            object.__setattr__(self, "replica_ports",
                               tuple(FIRST_REPLICA_PORT + i for i in range(self.replicas)))
        if len(self.replica_ports) != self.replicas:
            raise ValueError(f"{self.replicas} replicas need as many ports, not {self.replica_ports}")

    @classmethod
    def load(cls, var_dir: Path, **overrides) -> Cluster:
        """The cluster last started in ``var_dir`` (its replica count and ports), with ``overrides``."""
        saved = DataDir(var_dir).run / "cluster.json"
        settings = json.loads(saved.read_text()) if saved.is_file() else {}
        settings = {k: v for k, v in settings.items() if k in (
            "replicas", "replica_ports", "proxy_port", "proxy_host", "postgres_port", "ports", "hosts", "tls_cert",
            "tls_key")}
        settings["replica_ports"] = tuple(settings.get("replica_ports", ()))
        settings["hosts"] = tuple(settings.get("hosts", ()))
        if "ports" in settings:
            settings["ports"] = Ports(*settings["ports"])
        if overrides.get("replicas") is not None and overrides["replicas"] != settings.get("replicas"):
            settings.pop("replica_ports")  # another count: the default ports
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return cls(var_dir=var_dir, **{**settings, **overrides})

    def save(self) -> None:
        save_json(DataDir(self.var_dir).run / "cluster.json", {
            "replicas": self.replicas, "replica_ports": list(self.replica_ports), "proxy_port": self.proxy_port,
            "proxy_host": self.proxy_host, "postgres_port": self.postgres_port, "ports": list(astuple(self.ports)),
            "hosts": list(self.hosts), "tls_cert": self.tls_cert, "tls_key": self.tls_key})

    @property
    def postgres(self) -> PostgresRun:
        return PostgresRun(DataDir(self.var_dir).postgres, port=self.postgres_port)

    @property
    def proxy(self) -> NginxRun:
        return NginxRun(DataDir(self.var_dir).run / "nginx", host=self.proxy_host, listen=self.proxy_port,
                        upstreams=self.replica_ports, hosts=self.served_hosts,
                        tls_cert=Path(self.tls_cert) if self.tls_cert else None,
                        tls_key=Path(self.tls_key) if self.tls_key else None)

    @property
    def plain_beyond_loopback(self) -> bool:
        """Listening beyond loopback without TLS: tokens and photos cross the network in the clear."""
        return not self.on_loopback and not self.tls_cert

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.proxy_host)

    @property
    def served_hosts(self) -> tuple[str, ...]:
        """The host names answered beyond loopback ones: none on loopback; else the listen address, this
        machine's names (and, listening on every address, its addresses), and ``hosts``."""
        if self.on_loopback:
            return self.hosts
        names = [self.proxy_host, socket.gethostname(), socket.getfqdn()]
        if host_name(self.proxy_host) in ("0.0.0.0", "::", "*"):
            names = [socket.gethostname(), socket.getfqdn()] + [
                a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                if a.family in (socket.AF_INET, socket.AF_INET6)]
        return parse_hosts([n for n in names + list(self.hosts) if n and not is_loopback(n)])

    @property
    def url(self) -> str:
        return self.proxy.url

    def replica(self, port: int) -> Stack:
        pg = self.postgres
        return Stack(var_dir=self.var_dir, ports=self.ports, gateway_port=port, gateway_workers=self.gateway_workers,
                     model_store=self.model_store, database_url=pg.url, pgpass_file=pg.passfile,
                     photo_dir=self.var_dir, gateway_name=f"gateway-{port}",
                     gateway_auth="" if self.on_loopback else "required", hosts=self.served_hosts)

    @property
    def stacks(self) -> list[Stack]:
        return [self.replica(p) for p in self.replica_ports]


def serve_cluster(cluster: Cluster) -> dict:
    """Start what is not running: PostgreSQL, TorchServe, each replica, nginx; returns timings in seconds."""
    t0 = time.monotonic()
    cluster.save()
    cluster.postgres.start()
    for stack in cluster.stacks:  # a replica started with another GATEWAY_AUTH (LISTEN changed) is restarted
        mode = stack.gateway_dir / "gateway_auth"
        if gateway_pid(stack) and (mode.read_text() if mode.is_file() else "") != stack.access_settings:
            stop_gateway(stack)
    first, *rest = cluster.stacks
    serve(first)  # TorchServe (shared by all) and the first replica, which migrates the schema
    for stack in rest:
        start_gateway(stack)
    cluster.proxy.start()
    return {"total_s": round(time.monotonic() - t0, 1)}


def stop_cluster(cluster: Cluster) -> list[str]:
    """Stop nginx, every replica (also those a larger ``--replicas`` started), TorchServe, PostgreSQL; names
    what was running."""
    stopped = []
    if cluster.proxy.stop():
        stopped.append("nginx")
    run = DataDir(cluster.var_dir).run
    for d in sorted(run.glob("gateway-*")) if run.is_dir() else []:
        port = d.name.removeprefix("gateway-")
        if port.isdigit() and stop_gateway(cluster.replica(int(port)) if int(port) in cluster.replica_ports
                                           else Stack(var_dir=cluster.var_dir, gateway_name=d.name)):
            stopped.append(d.name)
    if torchserve.stop(cluster.stacks[0].torchserve):
        stopped.append("torchserve")
    if cluster.postgres.stop():
        stopped.append("postgres")
    return stopped


def cluster_status(cluster: Cluster) -> list[tuple[str, int | None, str]]:
    """(process, pid or None, address) for every part of the cluster."""
    pg, proxy = cluster.postgres, cluster.proxy
    rows = [("postgres", pg.pid(), f"127.0.0.1:{pg.port}"),
            ("torchserve", torchserve.running_pid(cluster.stacks[0].torchserve),
             cluster.stacks[0].torchserve.inference_url)]
    rows += [(s.gateway_name, gateway_pid(s), s.gateway_url) for s in cluster.stacks]
    rows.append(("nginx", proxy.pid(), proxy.url))
    return rows


def is_cluster(var_dir: Path) -> bool:
    """Whether ``var_dir`` holds a cluster's state (its PostgreSQL or nginx): ``make status`` / ``stop`` then
    speak of all of it."""
    run = DataDir(var_dir).run
    return (run / "postgres" / "data").is_dir() or (run / "nginx").is_dir()
