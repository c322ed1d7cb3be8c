"""CPU resources of a container: read from the OCI spec, validated, turned into cgroup files.

The OCI ``linux.resources.cpu`` object (and an Update's resources, the same shape) carries
``shares``, ``quota`` and ``period`` in v1 terms; on v2 they map to ``cpu.weight`` and
``cpu.max``. The conversion of shares is runc's linear one (``1 + (shares - 2) * 9999 /
262142``, the mapping the Kubernetes cgroup v2 KEP documents; runc 1.3 moved to a curve
that keeps 1024 -> 100). A quota below the kernel's minimum of 1000 us, or a period outside
1000 us..1 s, is an :class:`InvalidArgument` naming the field: the kernel would answer
EINVAL, and clamping would silently give the container more CPU than its limit. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runwasi_py._errors import InvalidArgument

__all__ = [
    "MIN_PERIOD_US",
    "MIN_QUOTA_US",
    "CpuLimits",
    "shares_to_weight",
    "v1_files",
    "v2_files",
]

MIN_QUOTA_US = 1000
"""The kernel's smallest CFS quota (``min_cfs_quota_period``: 1 ms)."""
MIN_PERIOD_US = 1000
MAX_PERIOD_US = 1_000_000
DEFAULT_PERIOD_US = 100_000
MIN_SHARES, MAX_SHARES = 2, 262144


@dataclass(frozen=True, slots=True)
class CpuLimits:
    """CPU limits as the OCI spec states them; ``None`` leaves a setting as it is.

    ``quota`` -1 means unlimited. Example:
        >>> CpuLimits.from_resources({"cpu": {"quota": 20000, "period": 100000}})
        CpuLimits(shares=None, quota=20000, period=100000)
    """

    shares: int | None = None
    quota: int | None = None
    period: int | None = None

    @property
    def empty(self) -> bool:
        """True when nothing is to be written."""
        return self.shares is None and self.quota is None and self.period is None

    @classmethod
    def from_resources(
        cls, resources: Mapping[str, Any] | None, field: str = "linux.resources"
    ) -> CpuLimits:
        """Validate ``resources.cpu`` (an OCI ``LinuxResources`` object, or None)."""
        if not resources:
            return cls()
        if not isinstance(resources, Mapping):
            raise InvalidArgument(f"{field} must be an object")
        cpu = resources.get("cpu")
        if cpu is None:
            return cls()
        if not isinstance(cpu, Mapping):
            raise InvalidArgument(f"{field}.cpu must be an object")
        shares = _int(cpu, "shares", f"{field}.cpu")
        quota = _int(cpu, "quota", f"{field}.cpu")
        period = _int(cpu, "period", f"{field}.cpu")
        # 0 means "not set" for all three (Go's zero value; runc skips it)
        shares = shares or None
        quota = quota or None
        period = period or None
        if shares is not None and not MIN_SHARES <= shares <= MAX_SHARES:
            raise InvalidArgument(
                f"{field}.cpu.shares: {shares} is outside {MIN_SHARES}..{MAX_SHARES}"
            )
        if quota is not None and quota != -1:
            if quota < 0:
                raise InvalidArgument(f"{field}.cpu.quota: {quota} is negative (-1 = unlimited)")
            if quota < MIN_QUOTA_US:
                raise InvalidArgument(
                    f"{field}.cpu.quota: {quota} us is below the kernel's minimum of"
                    f" {MIN_QUOTA_US} us"
                )
        if period is not None and not MIN_PERIOD_US <= period <= MAX_PERIOD_US:
            raise InvalidArgument(
                f"{field}.cpu.period: {period} us is outside {MIN_PERIOD_US}..{MAX_PERIOD_US} us"
            )
        return cls(shares=shares, quota=quota, period=period)


def _int(obj: Mapping[str, Any], key: str, field: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}.{key} must be an integer, not {value!r}")
    return value


def shares_to_weight(shares: int) -> int:
    """v1 ``cpu.shares`` (2..262144) as v2 ``cpu.weight`` (1..10000); runc's linear mapping."""
    shares = min(max(shares, MIN_SHARES), MAX_SHARES)
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def v1_files(limits: CpuLimits) -> list[tuple[str, str]]:
    """(file, value) pairs for a v1 ``cpu`` cgroup, in the order they are written.

    The period goes before the quota, as runc writes them: the kernel checks the pair at each
    write, and a small new period with the old quota is always acceptable.
    """
    out: list[tuple[str, str]] = []
    if limits.shares is not None:
        out.append(("cpu.shares", str(limits.shares)))
    if limits.period is not None:
        out.append(("cpu.cfs_period_us", str(limits.period)))
    if limits.quota is not None:
        out.append(("cpu.cfs_quota_us", str(limits.quota)))
    return out


def v2_files(limits: CpuLimits, current_max: str | None = None) -> list[tuple[str, str]]:
    """(file, value) pairs for a v2 cgroup.

    ``cpu.max`` holds quota and period together, so an update of one keeps the other from
    ``current_max`` (the file's present text, ``"max 100000"``).
    """
    out: list[tuple[str, str]] = []
    if limits.shares is not None:
        out.append(("cpu.weight", str(shares_to_weight(limits.shares))))
    if limits.quota is None and limits.period is None:
        return out
    cur_quota, cur_period = "max", DEFAULT_PERIOD_US
    if current_max:
        parts = current_max.split()
        if parts:
            cur_quota = parts[0]
        if len(parts) > 1 and parts[1].isdigit():
            cur_period = int(parts[1])
    quota = (
        cur_quota if limits.quota is None else ("max" if limits.quota == -1 else str(limits.quota))
    )
    period = cur_period if limits.period is None else limits.period
    out.append(("cpu.max", f"{quota} {period}"))
    return out
