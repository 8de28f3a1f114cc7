"""A check that a call releases the GIL, shared by the test modules."""

import threading
import time


def max_stall_while(call):
    """Runs ``call`` on a worker thread while this thread counts in a
    Python loop, and returns ``(seconds the call took, longest gap between
    two iterations of the loop while it ran)``.

    A call that holds the GIL for its whole run stalls the loop for about
    that long; one that releases it leaves gaps of a few switch intervals
    (milliseconds).
    """
    looping = threading.Event()
    done = threading.Event()
    took = []
    errors = []

    def work():
        # Only once this thread's loop runs can a stall of it be seen.
        looping.wait()
        t0 = time.perf_counter()
        try:
            call()
        except BaseException as err:  # reported to the test below
            errors.append(err)
        took.append(time.perf_counter() - t0)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    last = time.perf_counter()
    gap = 0.0
    looping.set()
    while not done.is_set():
        now = time.perf_counter()
        gap = max(gap, now - last)
        last = now
    worker.join()
    if errors:
        raise errors[0]
    return took[0], gap


def assert_releases_gil(call, min_seconds=0.3):
    """Fails unless ``call`` ran long enough to tell (``min_seconds``) and
    the loop on this thread never stalled for more than half of it."""
    took, gap = max_stall_while(call)
    assert took >= min_seconds, f"the call took {took:.3f}s, too short to tell; make it bigger"
    assert gap < took / 2, f"the calling thread stalled {gap:.3f}s of a {took:.3f}s call"
