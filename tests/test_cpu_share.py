"""handler.cpu_share: a worker computes on every core while the others are idle, on its share while they are not."""
import os
import signal
import subprocess
import sys
import time

from handler.cpu_share import CpuShare
from serving.stack import REPO


def test_a_lone_worker_takes_every_core_and_a_second_one_what_is_left(tmp_path):
    a = CpuShare(tmp_path, 2, name=str(os.getpid()))
    b = CpuShare(tmp_path, 2, name=str(os.getppid()))
    with a.claim() as alone:
        assert alone == 2
        with b.claim() as second:
            assert second == 1  # never zero: at worst a worker oversubscribes by one thread
    with b.claim() as alone_b:
        assert alone_b == 2
    with b.claim(), a.claim() as busy:
        assert busy == 1 and b.busy_elsewhere() == 1


def test_a_killed_worker_holds_no_cores(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from handler.cpu_share import CpuShare\n"
            "s = CpuShare(sys.argv[1], 2)\n"
            "with s.claim() as n:\n    print(n, flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "2"
        me = CpuShare(tmp_path, 2, name=str(os.getpid()))
        with me.claim() as n:
            assert n == 1  # the child computes on both cores
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 5
        while me.busy_elsewhere() and time.monotonic() < deadline:
            time.sleep(0.05)
        with me.claim() as n:
            assert n == 2
        assert not (tmp_path / str(child.pid)).exists()  # its file is cleaned up
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_a_batch_of_several_requests_takes_only_its_share(tmp_path):
    a = CpuShare(tmp_path, 2, name=str(os.getpid()))
    with a.claim(spare=False) as queued:
        assert queued == 1  # requests are waiting: the other worker is about to compute too
    with a.claim(share=2, spare=False) as queued:
        assert queued == 2
