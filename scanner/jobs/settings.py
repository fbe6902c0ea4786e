"""How long the job runner waits for a scan before it calls it stuck, and how often it retries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobLimits:
    """Bounds on a scan's thread (``[jobs]`` in config).

    ``cancel_grace``: a cancelled scan whose thread has not returned after this many seconds is
    abandoned (recorded CANCELLED; the thread is left to die and counted as stuck).
    ``stall_timeout``: a running scan that shows no progress at all (no window, no zero-pass
    piece, no planned item) for this long is stuck: it is cancelled, then abandoned with an ERROR
    verdict. 0 means ``2 x unit timeout + 60`` seconds (a unit's windows are bounded by the unit
    timeout, so a live scan beats at least that often).
    ``open_timeout``: StartScan opens the target to check it; an open that takes longer fails
    the call (UNAVAILABLE) instead of holding it.
    ``max_attempts``: a job started this many times without finishing (it hung, or the service
    died or stopped during it each time) is not started again: it is recorded DONE with an ERROR
    verdict naming why.
    """

    cancel_grace: float = 10.0
    stall_timeout: float = 0.0
    open_timeout: float = 30.0
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if self.cancel_grace <= 0 or self.open_timeout <= 0:
            raise ValueError("jobs.cancel_grace and jobs.open_timeout must be positive")
        if self.stall_timeout < 0:
            raise ValueError("jobs.stall_timeout must be 0 (automatic) or positive")
        if self.max_attempts < 1:
            raise ValueError("jobs.max_attempts must be at least 1")

    def stall_after(self, unit_timeout: float) -> float:
        """Seconds without progress after which a scan with this unit timeout is stuck."""
        return self.stall_timeout or 2 * unit_timeout + 60
