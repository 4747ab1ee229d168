"""nginx in front of the gateway replicas (``make serve-cluster``): its config rendered into ``<var>/run/nginx``,
started and stopped by PID.

    proxy = NginxRun(DataDir("var").run / "nginx", listen=7777, upstreams=[7781, 7782])
    proxy.start()      # nginx -c <dir>/nginx.conf (checked with -t first); reloads when the replicas changed
    proxy.stop()

What it does for the gateway: it reads a request's headers and body whole before a replica sees it (a slow or
trickling client holds an nginx connection, never a gunicorn thread), limits requests per client address, and
fails over: a replica that refuses connections or times out is skipped for ``FAIL_TIMEOUT`` seconds and the request
goes to the next one (an upload is retried only when it never reached a replica, so none is stored twice). It
answers only to loopback names and ``hosts`` (DNS rebinding: a web page that rebinds its own name to this
machine gets 421 from nginx's default server, before any replica sees the request).
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tagger.image import DEFAULT_MAX_BYTES
from tagger.net import FIRST_REPLICA_PORT, GATEWAY_PORT, LOOPBACK

MAX_BODY = f"{DEFAULT_MAX_BYTES * 3 // 2 // 2**20}m"  # above the gateway's own limit: it answers 413 itself, as JSON
FAIL_TIMEOUT = 5        # seconds a failed replica is left out
RATE = "100r/s"         # per client address, with a burst of BURST
BURST = 400
WORKER_USER = "nobody"  # nginx's workers when it starts as root
OTHER_HOST = ("this service does not answer to that host name; ask its operator which name to use "
              "(make serve-cluster HOSTS=...)")
TOO_LARGE = (f"the request body is over {MAX_BODY[:-1]} MB; send one photo (at most {DEFAULT_MAX_BYTES // 2**20} MB) "
             "at a time")


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        raise RuntimeError("nginx is not installed: make install-nginx (or apt-get install nginx)")
    return found


@dataclass(frozen=True)
class NginxRun:
    root: Path
    listen: int = GATEWAY_PORT
    upstreams: tuple[int, ...] = field(default=(FIRST_REPLICA_PORT, FIRST_REPLICA_PORT + 1))
    host: str = LOOPBACK
    hosts: tuple[str, ...] = ()  # host names answered beyond loopback ones ("*": any)
    tls_cert: Path | None = None  # a PEM certificate (chain) and its key: nginx terminates TLS on ``listen``
    tls_key: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both TLS_CERT and TLS_KEY")
        for name in ("tls_cert", "tls_key"):
            if getattr(self, name) is not None:
                path = Path(getattr(self, name)).resolve()
                if not path.is_file():
                    raise ValueError(f"{name.upper()} {path} is not a file")
                object.__setattr__(self, name, path)
        object.__setattr__(self, "upstreams", tuple(self.upstreams))
        object.__setattr__(self, "hosts", tuple(self.hosts))

    def server_names(self) -> str:
        """nginx's ``server_name`` list: loopback names and ``hosts`` (an IPv6 address in brackets)."""
        if "*" in self.hosts:
            return '""  ~.'
        names = ["localhost", "*.localhost", "127.0.0.1", "[::1]"] + [f"[{h}]" if ":" in h else h for h in self.hosts]
        return " ".join(dict.fromkeys(names))

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.listen}"

    def _listen(self, extra: str = "") -> str:
        """The ``listen`` line and, with TLS, the certificate: a plain-HTTP request to the TLS port (nginx's 497)
        is redirected to https on the same port."""
        if not self.tls_cert:
            return f"listen {self.host}:{self.listen}{extra};"
        return (f"listen {self.host}:{self.listen} ssl{extra};\n"
                f"        ssl_certificate {self.tls_cert};\n        ssl_certificate_key {self.tls_key};\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:tls:1m;\n"
                "        error_page 497 =301 https://$host:$server_port$request_uri;")

    def render(self) -> str:
        temp = self.root / "temp"
        user = f"user {WORKER_USER} nogroup;\n" if os.getuid() == 0 else ""
        hsts = "\n        add_header Strict-Transport-Security \"max-age=31536000\" always;" if self.tls_cert else ""
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;"
                            for p in self.upstreams)
        return f"""# written by serving/nginx.py for make serve-cluster; edits are overwritten
{user}worker_processes 1;
pid {self.pid_file};
error_log {self.root / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log {self.root / 'access.log'};
    client_body_temp_path {temp / 'body'};
    proxy_temp_path {temp / 'proxy'};
    fastcgi_temp_path {temp / 'fastcgi'};
    uwsgi_temp_path {temp / 'uwsgi'};
    scgi_temp_path {temp / 'scgi'};
    client_max_body_size {MAX_BODY};
    client_body_buffer_size 1m;
    client_header_timeout 15s;
    client_body_timeout 15s;
    send_timeout 60s;
    server_tokens off;
    limit_req_zone $binary_remote_addr zone=per_client:10m rate={RATE};
    limit_req_status 429;
    upstream gateways {{
{servers}
        keepalive 32;
    }}
    server {{  # any other host name (a rebinding page): refused before a replica sees it
        {self._listen(" default_server")}
        location / {{
            default_type application/json;
            return 421 '{{"error": "{OTHER_HOST}"}}';
        }}
    }}
    server {{
        {self._listen()}
        server_name {self.server_names()};{hsts}
        location / {{
            limit_req zone=per_client burst={BURST} nodelay;
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;  # the gateway asks a token of other machines
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_connect_timeout 2s;
            proxy_read_timeout 130s;
            proxy_next_upstream error timeout http_502;
            proxy_next_upstream_tries {len(self.upstreams)};
        }}
        error_page 413 = @too_large;
        error_page 429 = @too_many;
        error_page 502 503 504 = @no_gateway;
        location @too_large {{
            default_type application/json;
            return 413 '{{"error": "{TOO_LARGE}"}}';
        }}
        location @too_many {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 429 '{{"error": "too many requests from this address; slow down and retry"}}';
        }}
        location @no_gateway {{
            default_type application/json;
            add_header Retry-After 5 always;
            return 503 '{{"error": "no gateway replica answers now; retry shortly"}}';
        }}
    }}
}}
"""

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"nginx" in cmdline else None

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            d = self.root / "temp" / name
            d.mkdir(parents=True, exist_ok=True)
            if os.getuid() == 0:
                user = pwd.getpwnam(WORKER_USER)
                os.chown(d, user.pw_uid, user.pw_gid)
        text = self.render()
        if not self.conf.is_file() or self.conf.read_text() != text:
            self.conf.write_text(text)
        test = subprocess.run([nginx_binary(), "-t", "-q", "-c", str(self.conf)], capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx refused its config {self.conf}: {test.stderr.strip()[-500:]}")

    def start(self, *, timeout: float = 10) -> int:
        """Start nginx unless it runs (then reload its config if it changed); returns the master's PID."""
        self._prepare()
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)  # re-reads nginx.conf; an unchanged one changes nothing
            self._wait_listening(timeout)  # a new listen address is bound a moment after the signal
            return pid
        done = subprocess.run([nginx_binary(), "-c", str(self.conf)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"nginx did not start: {done.stderr.strip()[-500:]}; see {self.root / 'error.log'}")
        deadline = time.monotonic() + timeout
        while (pid := self.pid()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx wrote no pid file; see {self.root / 'error.log'}")
            time.sleep(0.05)
        self._wait_listening(timeout)
        return pid

    def _wait_listening(self, timeout: float) -> None:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "*") else "::1" if self.host in ("::", "[::]") else self.host
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((host.strip("[]"), self.listen), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx does not accept connections on {self.host}:{self.listen}; see "
                                       f"{self.root / 'error.log'}") from None
                time.sleep(0.05)

    def stop(self, *, timeout: float = 10) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGQUIT)  # graceful: requests in flight finish
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid() is not None:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
