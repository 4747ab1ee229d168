"""``make fuzz-api``: schemathesis's command line against the real stack (TorchServe + gateway started on free
loopback ports with their own data folder), every check, every phase (examples, coverage, fuzzing, stateful along
the spec's links), for a time budget.

    python -m fuzz.api --seconds 60          # exit status: schemathesis's (0: no failure)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from serving.stack import Stack, ensure_default_archive, serve, stop
from serving.torchserve import Ports, free_ports
from tagger import REPO


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=60, help="time budget of the schemathesis run (default: 60)")
    p.add_argument("--seed", type=int, default=1, help="schemathesis's seed (default: 1)")
    args = p.parse_args(argv)
    ensure_default_archive()
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as tmp:
        ports = free_ports(6)
        stack = Stack(var_dir=Path(tmp), ports=Ports(*ports[:5]), gateway_port=ports[5])
        serve(stack)
        try:
            cmd = [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
                   str(REPO / "fuzz/schemathesis.toml"), "run", f"{stack.gateway_url}/openapi.json",
                   "--checks", "all", "--max-time", str(args.seconds), "--seed", str(args.seed),
                   # the two built-in data checks run as fuzz/api_hooks.py wraps them (less contradicted reports)
                   "--exclude-checks", "positive_data_acceptance,negative_data_rejection",
                   "--phases", "examples,coverage,fuzzing,stateful"]
            env = dict(os.environ, SCHEMATHESIS_HOOKS="fuzz.api_hooks", PYTHONPATH=str(REPO))
            return subprocess.run(cmd, cwd=REPO, env=env).returncode
        finally:
            stop(stack)


if __name__ == "__main__":
    sys.exit(main())
