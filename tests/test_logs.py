"""serving/logs.py: a log past its cap is rotated; one written through an inherited descriptor (torchserve.out) is
copied and truncated, and its writer goes on at the start of the file."""
import subprocess
import sys

from serving.logs import keep_logs, rotate
from tests.helpers import wait_until

WRITER = """
import sys, time
with open(sys.argv[1], "ab", buffering=0) as out:   # as TorchServe's stdout: opened for appending
    for line in sys.stdin:
        out.write(line.encode())
        print("ok", flush=True)
"""


def test_an_appended_log_is_copied_truncated_and_written_on_from_its_start(tmp_path):
    run = tmp_path / "run"
    log = run / "torchserve/logs/torchserve.out"
    log.parent.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        def say(line):
            writer.stdin.write(line + "\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "ok\n"
        for i in range(100):
            say(f"old line {i:03d} " + "x" * 80)
        assert keep_logs(run, max_bytes=100_000, keep=3) == []  # under the cap: untouched
        assert keep_logs(run, max_bytes=4096, keep=3) == [log]
        assert log.stat().st_size == 0
        assert log.with_name("torchserve.out.1").read_text().count("old line") == 100
        say("new line")
        assert log.read_bytes() == b"new line\n"  # at the start: no hole of NULs where the old bytes were
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
        writer.stdout.close()


def test_at_most_keep_rotated_files_stay(tmp_path):
    log = tmp_path / "postgres.log"
    for i in range(6):
        log.write_text(f"generation {i}\n")
        rotate(log, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postgres.log", "postgres.log.1", "postgres.log.2",
                                                          "postgres.log.3"]
    assert [(tmp_path / f"postgres.log.{i}").read_text() for i in (1, 2, 3)] == \
        ["generation 5\n", "generation 4\n", "generation 3\n"]
    wait_until(lambda: log.read_text() == "", what="the truncated log")
