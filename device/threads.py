"""Priorities of the instrument's non-audio threads.

Linux applies a scheduling policy per thread, and a new thread inherits its
creator's.  The live loop puts the audio thread under SCHED_FIFO before it
builds anything (see ``wavae.device.live``), so every thread started from it
afterwards (the panel, OSC, MIDI, and the threads rtmidi starts from the MIDI
thread) would compete with the audio at realtime priority.  Each such thread
calls ``ordinary_priority()`` first: back to SCHED_OTHER, nice 0.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("wavae.device.threads")


def ordinary_priority() -> bool:
    """Put the calling thread under SCHED_OTHER; returns whether its policy changed."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            return False
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError) as e:  # not Linux, or not permitted: nothing to lower then
        log.debug("cannot set an ordinary priority: %s", e)
        return False
    return True
