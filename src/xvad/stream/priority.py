"""Thread priorities inside one process: the shared inference thread first; the threads that feed it
(camera readers, clip encoders) and background work (reports, explanations) take what it leaves.

The Linux scheduler gives each thread its own nice value; a thread may always lower its own priority.
Elsewhere (or when refused) this does nothing: priorities only decide who waits when the cores are
all busy, never what is computed.
"""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

# Nice 19 weighs 15 against the inference thread's 1024, so even 8 busy readers on its core leave it
# about 90 % of that core; at nice 10 (weight 110 each) they would take half. The readers lose nothing
# when the inference thread waits: a lower priority only decides who runs first when all are runnable.
READER = 19        # camera readers and clip encoders
BACKGROUND = 19    # reports and explanations


def lower_this_thread(nice: int) -> bool:
    """Raise the calling thread's nice value to ``nice`` (never lower it); True when it took."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) >= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, tid, nice)      # on Linux a thread id names one thread
        return True
    except OSError as exc:
        log.debug("thread priority not changed: %s", exc)
        return False
