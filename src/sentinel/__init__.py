"""sentinel: keeps production AI agents healthy.

The public surface is small on purpose: the records other code exchanges with sentinel
and the entry points to load settings and read cases. Everything else is internal.
"""

from sentinel.errors import SentinelError
from sentinel.settings import Settings, load_settings
from sentinel.telemetry import ChangeEvent, Sample, Span

__all__ = ["ChangeEvent", "Sample", "SentinelError", "Settings", "Span", "load_settings"]
