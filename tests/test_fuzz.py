"""The atheris harness over the decode and EXIF path: a short smoke run (`make fuzz` runs it for minutes), and every
kept finding replayed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.seeds import write_seeds
from tests.conftest import REPO

FINDINGS = Path(__file__).parent / "fuzz_findings"


@pytest.mark.slow
def test_fuzzing_smoke_finds_nothing(tmp_path):
    assert write_seeds(tmp_path / "seeds") > 40
    (tmp_path / "corpus").mkdir()
    r = subprocess.run([sys.executable, "-m", "fuzz.decode_exif", "-max_total_time=8", "-timeout=10",
                        "-rss_limit_mb=3072", "-max_len=65536", f"-artifact_prefix={tmp_path}/",
                        str(tmp_path / "corpus"), str(tmp_path / "seeds")], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done" in r.stderr
    assert not list(tmp_path.glob("crash-*"))
    assert not list(tmp_path.glob("timeout-*"))


@pytest.mark.parametrize("finding", sorted(p.name for p in FINDINGS.glob("*.bin")))
def test_kept_findings_pass_the_harness(finding):
    from fuzz.targets import one_input  # not the atheris harness: its import instruments Pillow for the process

    one_input((FINDINGS / finding).read_bytes())  # raises on a regression
