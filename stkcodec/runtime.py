"""How many threads stkc's work uses, set once per process before PyTorch starts its pools.

PyTorch's default OpenMP threads busy-wait between parallel regions. Two stkc processes on
the same cores (a user compressing two folders at once) then spin against each other: on a
2-core machine each ran 4x slower than alone. stkc asks for threads that sleep when idle
(OMP_WAIT_POLICY=PASSIVE, unless the user set it) and uses as many threads as the cores this
process may run on (os.sched_getaffinity, so `taskset` and container limits count), or
$STKC_THREADS when set.
"""

from __future__ import annotations

import os
import sys

ENV = "STKC_THREADS"


def thread_count() -> int:
    """$STKC_THREADS if set (a positive integer), else the cores this process may run on."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            from .errors import BadInputError

            raise BadInputError(f"{ENV}={value!r}: expected a positive number of threads")
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def prefer_sleeping_threads() -> None:
    """Idle OpenMP threads sleep, unless the user chose otherwise. OpenMP reads this once, when
    torch is first imported: the stkc command calls it before that (stkcodec/cli.py); a library
    import leaves the host program's threads as they are."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads() -> int:
    """Set the thread count for this process (the stkc command, before torch is imported);
    returns the count."""
    threads = thread_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads
