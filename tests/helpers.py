"""What several test modules share, kept out of the test modules themselves (a test module imports no other).

    value = wait_until(lambda: store.get("x"), timeout=30, what="the upload to be stored")

``wait_until`` is the one way a test waits for the system: it polls a condition, bounded, and fails naming what it
waited for and for how long; it never asserts how long something took (a busy machine is slower, not wrong).
"""
from __future__ import annotations

import time


class WaitedTooLong(AssertionError):
    """A condition that did not hold within its bound; the message names it."""


def wait_until(condition, *, timeout: float = 30.0, interval: float = 0.05, what: str = "the condition"):
    """Call ``condition`` until it returns something truthy (returned), at most ``timeout`` seconds.

    Raises:
        WaitedTooLong: naming ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitedTooLong(f"waited {timeout:.0f} s for {what}; last seen: {value!r}"[:500])
        time.sleep(interval)
