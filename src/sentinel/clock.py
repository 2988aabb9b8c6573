"""Time as a dependency: the ``Clock`` protocol and its implementations (the system clock,
an accelerated one for simulations, a fake one that moves only when told).

Nothing else in sentinel calls ``datetime.now()``; code that needs the time takes a
``Clock`` so tests and replays can drive it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, for measuring durations."""
        ...

    @property
    def speed(self) -> float:
        """How many clock seconds pass per real second: 1 for the system clock, more for
        an accelerated simulation (schedules divide their intervals by it)."""
        ...


class SystemClock:
    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ScaledClock:
    """Real time, accelerated ``speed`` times from ``origin`` (the clock's time at
    creation): a simulated fleet and the daemon watching it share one, so an hour of
    telemetry can be lived in a minute. ``monotonic`` is in clock seconds too."""

    def __init__(self, origin: datetime, speed: float) -> None:
        if origin.tzinfo is None:
            raise ValueError(f"ScaledClock needs an aware datetime, got {origin!r}")
        if not speed > 0:
            raise ValueError(f"ScaledClock speed must be positive, got {speed!r}")
        self.origin = origin
        self._speed = float(speed)
        self._real0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def monotonic(self) -> float:
        return (time.monotonic() - self._real0) * self._speed

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=self.monotonic())


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware datetime, got {start!r}")
        self._now = start
        self._mono = 0.0
        self.speed = 1.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
