"""Process limits a load run needs: one file descriptor per connection plus headroom."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

FD_HEADROOM = 256


def raise_nofile_limit(connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``connections + headroom`` (never above the hard limit).

    Returns the soft limit now in force; logs a warning when it is still too low.
    """
    wanted = connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        log.info("raised the open-files soft limit from %d to %d", soft, new_soft)
        soft = new_soft
    if soft < wanted:
        log.warning("open-files limit %d is below the %d this run may need", soft, wanted)
    return soft
