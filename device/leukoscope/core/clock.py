"""Whether the wall clock can be believed: a Pi has no real-time clock.

Without a network a Pi boots at the time `fake-hwclock` saved at the last shutdown (or at
1970 without it). Records are stamped with that time, and retention deletes by age, so
the appliance needs to know when the time is only a guess. The clock is trusted when the
kernel says it is synchronised (systemd-timesyncd and chrony both set this through
adjtimex), when systemd-timesyncd has marked it so (/run/systemd/timesync/synchronized,
readable where the daemon's sandbox forbids adjtimex), or when a person set it this boot
(`TimeSetMark`); never when it reads earlier than this build.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

#: No clock reading before this day can be right: this build did not exist yet.
BUILD_DATE = date(2026, 12, 1)
BUILD_EPOCH = datetime(BUILD_DATE.year, BUILD_DATE.month, BUILD_DATE.day, tzinfo=UTC).timestamp()
#: A record stamped further ahead than this was stamped by a wrong clock.
FUTURE_SLACK_S = 86400.0
#: systemd-timesyncd touches this file once it has synchronised the clock.
TIMESYNC_MARK = Path("/run/systemd/timesync/synchronized")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: adjtimex's answer when the clock is not synchronised.
_TIME_ERROR = 5


@dataclass(frozen=True)
class ClockStatus:
    """Whether the clock is trusted, and why (in words, for the page and the log)."""

    trusted: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        """Plain data for the status API."""
        return {"trusted": self.trusted, "reason": self.reason, "now_unix": time.time()}


def kernel_synchronised() -> bool | None:
    """The kernel's view (adjtimex, read only); None where the call is not allowed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process's own C library
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


def boot_id() -> str:
    """This boot's id (a mark set in another boot means nothing now)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown-boot"


class TimeSetMark:
    """A file saying a person set the clock during this boot (from the status page)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def set(self) -> None:
        """Record that the clock was set by hand in this boot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(boot_id() + "\n")

    def this_boot(self) -> bool:
        """True if the mark was made in this boot."""
        try:
            return self.path.read_text().strip() == boot_id()
        except OSError:
            return False


def clock_status(
    mark: TimeSetMark | None = None,
    *,
    now: float | None = None,
    synchronised: bool | None = None,
) -> ClockStatus:
    """Whether the clock is trusted now; `synchronised` overrides the system's answer."""
    now = time.time() if now is None else now
    if now < BUILD_EPOCH:
        return ClockStatus(False, f"the clock reads {_day(now)}, before this build ({BUILD_DATE})")
    if synchronised is None:
        synchronised = kernel_synchronised() or TIMESYNC_MARK.exists()
    if synchronised:
        return ClockStatus(True, "synchronised")
    if mark is not None and mark.this_boot():
        return ClockStatus(True, "set by hand on this boot")
    return ClockStatus(False, "not synchronised since boot (no network time): set it")


def plausible(unix: float, now: float | None = None) -> bool:
    """A record time that could be right: not before this build, not in the future."""
    now = time.time() if now is None else now
    return BUILD_EPOCH <= unix <= now + FUTURE_SLACK_S


def _day(unix: float) -> str:
    try:
        return datetime.fromtimestamp(unix, UTC).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return "an impossible date"


def set_system_clock(unix: float) -> None:
    """Set the wall clock (needs CAP_SYS_TIME: the root helper, never the daemon)."""
    time.clock_settime(time.CLOCK_REALTIME, unix)
    logger.warning("system clock set to %s", datetime.fromtimestamp(unix, UTC).isoformat())
