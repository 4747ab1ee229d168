"""Command line for the stack (``make serve``/``stop``/``status``/``deploy``/``rollback``/``versions``):

    python -m serving {serve,stop,status,versions,rollback} [--var DIR]
    python -m serving deploy VERSION [--var DIR]       # model_store/tagger-VERSION.mar becomes the default
    python -m serving serve-cluster [--replicas N] [--listen HOST] [--hosts NAMES]   # PostgreSQL, TorchServe, ...
    python -m serving {token,revoke,tokens} [--name NAME] [--scope read|write]   # API tokens (serving/tokens.py)
    python -m serving reparse-exif                      # EXIF whose parse overran, parsed again (serving/reparse.py)
    python -m serving {backup,restore} DIR              # a consistent backup; its restore (serving/backups.py)
    python -m serving empty-trash [--days N]            # erase deleted photos (all, or older than N days)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from photo_store import StoreUnavailable
from serving import torchserve
from serving.backups import backup_command, empty_trash_command, restore_command
from serving.cluster import Cluster, cluster_status, is_cluster, serve_cluster, stop_cluster
from serving.leftovers import stop_leftovers
from serving.reparse import reparse_exif
from serving.stack import Stack, gateway_pid, serve, stop, versions
from serving.tokens import open_setup_store, run
from serving.versions import DeployError
from tagger.exif_parsers import ExifParsers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["serve", "serve-cluster", "stop", "status", "deploy", "rollback", "versions",
                                        "token", "revoke", "tokens", "reparse-exif", "backup", "restore",
                                        "empty-trash"])
    p.add_argument("version", nargs="?", help="with deploy: the version to deploy (model_store/tagger-VERSION.mar); "
                   "with backup and restore: the backup's folder")
    p.add_argument("--days", type=float, default=None, help="with empty-trash: only what was deleted more than "
                   "this many days ago (default: everything)")
    p.add_argument("--var", default=None, help="data and runtime directory (default: var/ in the repository)")
    p.add_argument("--replicas", type=int, default=None, help="with serve-cluster: gateway replicas (default 2, "
                   "or as many as last time)")
    p.add_argument("--listen", default=None, help="with serve-cluster: the address nginx listens on (default "
                   "127.0.0.1; beyond loopback every request then needs a token)")
    p.add_argument("--hosts", default=None, help="with serve-cluster: more host names clients use to reach it (a "
                   "DNS alias, a NAT address), comma-separated (default: this machine's own names and addresses)")
    p.add_argument("--tls-cert", default=None, help="with serve-cluster: a PEM certificate (chain); nginx then "
                   "terminates TLS (give --tls-key too; '' turns TLS off again)")
    p.add_argument("--tls-key", default=None, help="with serve-cluster: the certificate's private key (PEM)")
    p.add_argument("--name", default=None, help="with token: who holds it; with revoke: its name or id")
    p.add_argument("--scope", default=None, choices=["read", "write"], help="with token (write includes read)")
    args = p.parse_args(argv)
    stack = Stack(var_dir=Path(args.var).resolve()) if args.var else Stack()
    if args.command in ("token", "revoke", "tokens"):
        status, text = run(args.command, stack, name=args.name, scope=args.scope)
        print(text, file=sys.stdout if status == 0 else sys.stderr)
        return status
    if args.command == "reparse-exif":
        return reparse_command(stack)
    if args.command == "backup":
        return backup_command(stack, args.version)
    if args.command == "restore":
        return restore_command(stack, args.version)
    if args.command == "empty-trash":
        return empty_trash_command(stack, args.days)
    tls = {k: (str(Path(v).resolve()) if v else "") for k, v in (("tls_cert", args.tls_cert),
                                                                  ("tls_key", args.tls_key)) if v is not None}
    cluster = Cluster.load(stack.var_dir, replicas=args.replicas, proxy_host=args.listen,
                           hosts=None if args.hosts is None else tuple(args.hosts.replace(",", " ").split()),
                           **tls)
    if args.command == "serve-cluster":
        if cluster.replicas < 1:
            p.error("--replicas must be at least 1")
        if cluster.plain_beyond_loopback:
            print(f"warning: listening on {cluster.proxy_host} without TLS: tokens, session cookies and photos "
                  "cross the network in the clear; give TLS_CERT=... TLS_KEY=... (make serve-cluster)",
                  file=sys.stderr)
        try:
            timings = serve_cluster(cluster)
        except RuntimeError as exc:
            print(f"serve-cluster failed: {exc}", file=sys.stderr)
            return 1
        print(f"ready in {timings['total_s']}s")
        return print_cluster(cluster)
    if args.command == "status" and is_cluster(stack.var_dir):
        return print_cluster(cluster)
    if args.command == "serve":
        try:
            timings = serve(stack)
        except RuntimeError as exc:
            print(f"serve failed: {exc}", file=sys.stderr)
            return 1
        ts = stack.torchserve
        print(f"ready in {timings['total_s']}s (model worker READY after {timings['model_ready_s']}s)\n"
              f"  gateway        {stack.gateway_url}  (annotation page: {stack.gateway_url}/annotate/)\n"
              f"  TorchServe     {ts.inference_url} (inference), {ts.management_url} (management), "
              f"{ts.metrics_url}/metrics\n  keys           {ts.key_file}\n  stop with      make stop")
    elif args.command in ("deploy", "rollback", "versions"):
        try:
            v = versions(stack)
            if args.command == "deploy":
                if not args.version:
                    p.error("deploy needs a VERSION (make deploy VERSION=1.1)")
                done = v.deploy(args.version)
                print(f"version {done['default']} is the default; {done['previous']} stays registered for "
                      "`make rollback`")
            elif args.command == "rollback":
                done = v.rollback()
                print(f"rolled back: version {done['default']} is the default; {done['previous']} stays registered")
            else:
                for row in v.listing():
                    print(f"{'*' if row['default'] else ' '} {row['version']:12s} {row['workers']} workers  "
                          f"{row['url']}{'  (default)' if row['default'] else ''}")
        except DeployError as exc:
            print(f"{args.command} failed: {exc}", file=sys.stderr)
            return 2
    elif args.command == "stop":
        stop(stack, sweep=False)
        stopped = stop_cluster(cluster) if is_cluster(stack.var_dir) else []
        print(f"stopped{': ' + ', '.join(stopped) if stopped else ''}")
        for left in stop_leftovers(stack.var_dir):  # what killed parents left behind, found by the stack's mark
            print(f"  stopped a leftover process {left}")
    else:
        ts_pid = torchserve.running_pid(stack.torchserve)
        gw_pid = gateway_pid(stack)
        print(f"torchserve: {'running, pid %d' % ts_pid if ts_pid else 'stopped'}\n"
              f"gateway:    {'running, pid %d' % gw_pid if gw_pid else 'stopped'}")
        return 0 if ts_pid and gw_pid else 3
    return 0


def reparse_command(stack: Stack) -> int:
    """``make reparse-exif``: 0 when every photo's EXIF is now read, else 1 (the ones still unread are listed)."""
    try:
        store = open_setup_store(stack)
    except (StoreUnavailable, ValueError) as exc:
        print(f"reparse-exif failed: {exc}", file=sys.stderr)
        return 1
    parsers = ExifParsers()
    try:
        done = reparse_exif(store, parsers)
    finally:
        parsers.close()
    print(f"EXIF read again for {done['read']} photo(s)")
    for id_name in done["unread"]:
        print(f"  still unreadable: {id_name!r}", file=sys.stderr)
    return 1 if done["unread"] else 0


def print_cluster(cluster: Cluster) -> int:
    """Every process of the cluster, and how to reach its database; 0 when all run, else 3."""
    rows = cluster_status(cluster)
    for name, pid, address in rows:
        print(f"{name:14s} {'running, pid %d' % pid if pid else 'stopped':22s} {address}")
    pg = cluster.postgres
    print(f"database       {pg.url}\nPGPASSFILE={pg.passfile}\n"
          f"  psql:        PGPASSFILE={pg.passfile} psql {pg.url}\n"
          f"  gateway:     {cluster.url}  (annotation page: {cluster.url}/annotate/)\n  stop with:   make stop")
    return 0 if all(pid for _, pid, _ in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
