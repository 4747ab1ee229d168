"""Command line for the stack: one subcommand per make target (``python -m serving COMMAND --help`` for each).

    python -m serving {serve,stop,status,versions,rollback} [--var DIR]
    python -m serving deploy VERSION [--var DIR]       # model_store/tagger-VERSION.mar becomes the default
    python -m serving serve-cluster [--replicas N] [--listen HOST] [--hosts NAMES] [--tls-cert F --tls-key F]
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


def get_args_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--var", default=None, help="data and runtime directory (default: var/ in the repository)")
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=func)
        return parser

    command("serve", cmd_serve, "start TorchServe and the gateway (the default model is built when missing)")
    command("stop", cmd_stop, "stop everything this data folder's stack or cluster started, leftovers included")
    command("status", cmd_status, "what runs, with PIDs and addresses (exit 3 when something is stopped)")
    cluster = command("serve-cluster", cmd_serve_cluster, "PostgreSQL, TorchServe, gateway replicas and nginx")
    cluster.add_argument("--replicas", type=int, default=None, help="gateway replicas (default 2, or as many as "
                         "last time)")
    cluster.add_argument("--listen", default=None, help="the address nginx listens on (default 127.0.0.1; beyond "
                         "loopback every request then needs a token)")
    cluster.add_argument("--hosts", default=None, help="more host names clients use to reach it (a DNS alias, a NAT "
                         "address), comma-separated (default: this machine's own names and addresses)")
    cluster.add_argument("--tls-cert", default=None, help="a PEM certificate (chain): nginx terminates TLS (give "
                         "--tls-key too; '' turns TLS off again)")
    cluster.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    deploy = command("deploy", cmd_versions, "make VERSION the default (model_store/tagger-VERSION.mar)")
    deploy.add_argument("version", help="the version to deploy (make archive VERSION=... wrote its archive)")
    command("rollback", cmd_versions, "serve the previous version again")
    command("versions", cmd_versions, "the versions TorchServe holds; * marks the default")
    token = command("token", cmd_tokens, "make an API token (printed once)")
    token.add_argument("--name", default=None, help="who holds it")
    token.add_argument("--scope", default=None, choices=["read", "write"], help="write includes read")
    revoke = command("revoke", cmd_tokens, "revoke tokens by name or id")
    revoke.add_argument("--name", default=None, help="the tokens' name, or one token's id")
    command("tokens", cmd_tokens, "every token: id, scope, name, live or revoked (never the secret)")
    command("reparse-exif", cmd_reparse, "parse again the EXIF whose parse overran when it was stored")
    backup = command("backup", cmd_backup, "a consistent backup while it serves")
    backup.add_argument("folder", nargs="?", help="a new or empty folder")
    restore = command("restore", cmd_restore, "restore a backup into an empty data folder (services stopped)")
    restore.add_argument("folder", nargs="?", help="the folder make backup wrote")
    trash = command("empty-trash", cmd_empty_trash, "erase deleted photos now")
    trash.add_argument("--days", type=float, default=None, help="only what was deleted more than this many days "
                       "ago (default: everything)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    stack = Stack(var_dir=Path(args.var).resolve()) if args.var else Stack()
    return args.func(args, stack)


def _cluster(args, stack: Stack) -> Cluster:
    """The cluster last started in the data folder, with what this command line changes."""
    tls = {k: (str(Path(v).resolve()) if v else "") for k in ("tls_cert", "tls_key")
           if (v := getattr(args, k, None)) is not None}
    hosts = getattr(args, "hosts", None)
    return Cluster.load(stack.var_dir, replicas=getattr(args, "replicas", None),
                        proxy_host=getattr(args, "listen", None),
                        hosts=None if hosts is None else tuple(hosts.replace(",", " ").split()), **tls)


def cmd_serve(args, stack: Stack) -> int:
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
    return 0


def cmd_serve_cluster(args, stack: Stack) -> int:
    cluster = _cluster(args, stack)
    if cluster.replicas < 1:
        print("serve-cluster: --replicas must be at least 1", file=sys.stderr)
        return 2
    if cluster.plain_beyond_loopback:
        print(f"warning: listening on {cluster.proxy_host} without TLS: tokens, session cookies and photos cross "
              "the network in the clear; give TLS_CERT=... TLS_KEY=... (make serve-cluster)", file=sys.stderr)
    try:
        timings = serve_cluster(cluster)
    except RuntimeError as exc:
        print(f"serve-cluster failed: {exc}", file=sys.stderr)
        return 1
    print(f"ready in {timings['total_s']}s")
    return print_cluster(cluster)


def cmd_stop(args, stack: Stack) -> int:
    stop(stack, sweep=False)
    stopped = stop_cluster(_cluster(args, stack)) if is_cluster(stack.var_dir) else []
    print(f"stopped{': ' + ', '.join(stopped) if stopped else ''}")
    for left in stop_leftovers(stack.var_dir):  # what killed parents left behind, found by the stack's mark
        print(f"  stopped a leftover process {left}")
    return 0


def cmd_status(args, stack: Stack) -> int:
    if is_cluster(stack.var_dir):
        return print_cluster(_cluster(args, stack))
    ts_pid = torchserve.running_pid(stack.torchserve)
    gw_pid = gateway_pid(stack)
    print(f"torchserve: {'running, pid %d' % ts_pid if ts_pid else 'stopped'}\n"
          f"gateway:    {'running, pid %d' % gw_pid if gw_pid else 'stopped'}")
    return 0 if ts_pid and gw_pid else 3


def cmd_versions(args, stack: Stack) -> int:
    """deploy, rollback and versions on the running TorchServe."""
    try:
        v = versions(stack)
        if args.command == "deploy":
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
    return 0


def cmd_tokens(args, stack: Stack) -> int:
    status, text = run(args.command, stack, name=getattr(args, "name", None), scope=getattr(args, "scope", None))
    print(text, file=sys.stdout if status == 0 else sys.stderr)
    return status


def cmd_reparse(args, stack: Stack) -> int:
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


def cmd_backup(args, stack: Stack) -> int:
    return backup_command(stack, args.folder)


def cmd_restore(args, stack: Stack) -> int:
    return restore_command(stack, args.folder)


def cmd_empty_trash(args, stack: Stack) -> int:
    return empty_trash_command(stack, args.days)


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
