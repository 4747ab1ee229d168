"""Helper processes that end with the process that started them.

    subprocess.run(cmd, preexec_fn=functools.partial(die_with_parent, os.getpid()))  # the child, from its start
    die_with_parent(int(sys.argv[1]))                                                  # or a child, on itself

Linux sends the child SIGKILL when its parent ends, however it ends (the OOM killer, a chaos test's SIGKILL), so no
EXIF parser or training run outlives the server or job that wanted it. The signal follows the *thread* that started
the child: start helpers from a thread that lives as long as its process. Elsewhere this does nothing.
"""
from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have this process SIGKILLed when its parent ends; exit at once if the parent ``parent`` has already gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:
        os._exit(0)
