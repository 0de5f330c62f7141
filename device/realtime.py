"""Realtime without root: SCHED_FIFO for the audio thread, and locked memory.

The systemd unit grants the rights (``LimitRTPRIO=70``, ``LimitMEMLOCK=``);
the code uses them, per thread, where they are needed:

- ``set_realtime(priority)`` puts the calling thread under SCHED_FIFO (Linux
  applies it per thread; threads created afterwards inherit it).  Not
  ``CPUSchedulingPolicy=`` in the unit: that would make every thread
  realtime, the status and network threads too.  A thread that must not be
  realtime calls ``ordinary_priority()`` first thing (dropping priority needs no right);
  a light thread that shares the GIL with it (OSC) calls ``gil_sharer_priority()``.
- ``lock_memory()`` calls ``mlockall(MCL_CURRENT | MCL_ONFAULT)`` once the
  model is loaded and warmed up, so no page the audio path has touched (code
  of the libraries, weights, buffers) can be evicted and fetched back from
  the SD card mid-block.  ``MCL_ONFAULT`` (Linux >= 4.4) locks what is
  resident and what is touched later in the same mappings, without faulting
  in the rest: plain ``MCL_CURRENT`` would make every thread stack (8 MiB
  each) and every untouched mapping resident (docs/benchmarks/service.md has
  the figures).  Not ``MCL_FUTURE``: it
  would turn an allocation beyond ``RLIMIT_MEMLOCK`` into an error; the audio
  path allocates nothing per block, so what it touches exists by then.

Without the rights (a shell, no limits.d entry) both log one warning that
says how to grant them, and the instrument plays at normal priority.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
from typing import Any

log = logging.getLogger("wavae.device.realtime")

MCL_CURRENT = 1  # <sys/mman.h>, the same on every Linux architecture
MCL_ONFAULT = 4


def set_realtime(priority: int, what: str) -> tuple[int, Any] | None:
    """SCHED_FIFO for the calling thread (Linux applies it per thread); warns when not permitted.

    Returns the previous (policy, param) to restore, or None when nothing changed.
    """
    if priority <= 0:
        return None
    try:
        previous = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.warning(
            "cannot run the %s at realtime priority %d (%s): running at normal priority; allow it with "
            "LimitRTPRIO=%d in the systemd unit or an rtprio limit in /etc/security/limits.d/",
            what, priority, e, priority,
        )
        return None
    return previous


def ordinary_priority() -> bool:
    """Put the calling thread under SCHED_OTHER; returns whether its policy changed.

    Every non-audio thread (panel, OSC, MIDI, the service thread) calls it
    first: a thread inherits its creator's policy, and the audio thread is
    SCHED_FIFO by the time they start.  Dropping priority needs no right."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            return False
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError) as e:  # not Linux, or not permitted: nothing to lower then
        log.debug("cannot set an ordinary priority: %s", e)
        return False
    return True


GIL_SHARER_PRIORITY = 1  # SCHED_FIFO of a light thread that shares the GIL with a realtime audio thread


def gil_sharer_priority() -> bool:
    """For a light, event-driven thread of the audio process (OSC): the lowest realtime priority.

    Called first thing by a thread created by the realtime audio thread (whose
    SCHED_FIFO it inherited); returns whether it runs realtime.  Every Python
    thread of the process takes the GIL the audio thread needs: at an ordinary
    priority, another process (a render, a browser, anything busy) can preempt
    it while it holds the GIL, and the audio thread then waits until the
    scheduler gives that thread the CPU back, for as long as the busy
    processes keep it (docs/benchmarks/playground-live.md).  At SCHED_FIFO 1 no
    ordinary process preempts it, and the audio thread (and JACK's) still
    does.  A thread that is not realtime when it starts (the loop runs without
    ``realtime_priority``) stays as it is.  Not for heavy work (a model load):
    that would keep the ordinary processes off a core for its whole length;
    a flood of OSC messages can do that too, as it could already take the GIL
    from the audio thread (the kernel's realtime throttle leaves ordinary
    processes 5 % of each core).
    """
    try:
        if os.sched_getscheduler(0) not in (os.SCHED_FIFO, os.SCHED_RR):
            return False
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(GIL_SHARER_PRIORITY))
    except (OSError, AttributeError) as e:
        log.debug("cannot set the GIL sharer's priority: %s", e)
        return False
    return True


def _memlock_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"


def lock_memory() -> bool:
    """``mlockall(MCL_CURRENT | MCL_ONFAULT)``; True when locked, else one warning and False (it plays anyway)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mlockall(MCL_CURRENT | MCL_ONFAULT)
        if rc != 0 and ctypes.get_errno() == errno.EINVAL:  # a kernel older than 4.4: no MCL_ONFAULT
            rc = libc.mlockall(MCL_CURRENT)
    except (OSError, AttributeError) as e:  # no libc symbol (not Linux/glibc/musl)
        log.warning("cannot lock memory (%s): pages may be evicted under memory pressure", e)
        return False
    if rc != 0:
        err = ctypes.get_errno()
        log.warning(
            "cannot lock memory (%s; RLIMIT_MEMLOCK is %s): pages may be evicted and re-read from disk "
            "mid-block; allow it with LimitMEMLOCK=infinity in the systemd unit or a memlock limit in "
            "/etc/security/limits.d/",
            errno.errorcode.get(err, str(err)), _memlock_limit(),
        )
        return False
    return True

