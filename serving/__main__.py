"""Command line for the stack: ``python -m serving {serve,stop,status} [--var DIR]`` (``make serve``/``make stop``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import torchserve
from serving.stack import Stack, gateway_pid, serve, stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    p.add_argument("command", choices=["serve", "stop", "status"])
    p.add_argument("--var", default=None, help="data and runtime directory (default: var/ in the repository)")
    args = p.parse_args(argv)
    stack = Stack(var_dir=Path(args.var).resolve()) if args.var else Stack()
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
    elif args.command == "stop":
        stop(stack)
        print("stopped")
    else:
        ts_pid = torchserve.running_pid(stack.torchserve)
        gw_pid = gateway_pid(stack)
        print(f"torchserve: {'running, pid %d' % ts_pid if ts_pid else 'stopped'}\n"
              f"gateway:    {'running, pid %d' % gw_pid if gw_pid else 'stopped'}")
        return 0 if ts_pid and gw_pid else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
