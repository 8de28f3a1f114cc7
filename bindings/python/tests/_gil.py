"""A check that a call releases the GIL, shared by the test modules."""

import gc
import threading
import time


def max_stall_while(call, min_seconds=0.0):
    """Runs ``call`` on a worker thread, again and again until the calls
    have taken ``min_seconds`` in all, while this thread counts in a Python
    loop, and returns ``(the shortest call's seconds, the longest gap
    between two iterations of the loop while the calls ran)``.

    A call that holds the GIL for its whole run stalls the loop for about
    that long; one that releases it leaves gaps of a few switch intervals
    (milliseconds). Repeating the call, rather than sizing its work for one
    machine, keeps the run long enough to tell on a faster machine.
    """
    looping = threading.Event()
    done = threading.Event()
    calls = []
    errors = []

    def work():
        # Only once this thread's loop runs can a stall of it be seen.
        looping.wait()
        try:
            while sum(calls) < min_seconds or not calls:
                t0 = time.perf_counter()
                call()
                calls.append(time.perf_counter() - t0)
        except BaseException as err:  # reported to the test below
            errors.append(err)
        done.set()

    # A garbage collection runs under the GIL on whichever thread
    # allocates: late in the test session, with a large heap, one that the
    # calls' result objects set off stalled this loop for 0.17 s (a failed
    # CI run), which says nothing about the call. So none runs meanwhile.
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        worker = threading.Thread(target=work)
        worker.start()
        last = time.perf_counter()
        gap = 0.0
        looping.set()
        while not done.is_set():
            now = time.perf_counter()
            gap = max(gap, now - last)
            last = now
        # The last stretch counts too: a worker that takes the GIL as soon
        # as `looping` is set can finish every call before the loop's first
        # turn, and its stall then shows only here.
        gap = max(gap, time.perf_counter() - last)
        worker.join()
    finally:
        if collecting:
            gc.enable()
    if errors:
        raise errors[0]
    return min(calls), gap


def assert_releases_gil(call, min_seconds=0.3, min_call_seconds=0.05):
    """Fails if the loop on this thread stalled for half of one call or more.

    Each call must take ``min_call_seconds`` (well above the interpreter's
    5 ms switch interval) for a held GIL to show as a stall, and the calls
    are repeated for ``min_seconds`` so that a release is seen many times.
    """
    shortest, gap = max_stall_while(call, min_seconds)
    assert shortest >= min_call_seconds, (
        f"one call took {shortest:.3f}s, too short to tell; make it bigger"
    )
    assert gap < shortest / 2, f"the calling thread stalled {gap:.3f}s of a {shortest:.3f}s call"
