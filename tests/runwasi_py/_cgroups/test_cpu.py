"""CPU limits: validation (kernel minimums), v1 files, v2 cpu.weight and cpu.max."""

from __future__ import annotations

from typing import Any

import pytest

from runwasi_py._cgroups import CpuLimits, shares_to_weight
from runwasi_py._cgroups._cpu import v1_files, v2_files
from runwasi_py._errors import InvalidArgument


def limits(**cpu: Any) -> CpuLimits:
    return CpuLimits.from_resources({"cpu": cpu})


def test_reads_the_three_settings() -> None:
    assert limits(shares=512, quota=20000, period=100000) == CpuLimits(512, 20000, 100000)
    assert limits(quota=-1) == CpuLimits(quota=-1)
    assert CpuLimits.from_resources(None).empty
    assert CpuLimits.from_resources({"memory": {"limit": 1}}).empty
    assert limits(shares=0, quota=0, period=0).empty  # Go zero values mean unset


def test_quota_below_the_kernel_minimum_is_invalid_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.cpu\.quota: 999 us is below"):
        limits(quota=999)
    assert limits(quota=1000).quota == 1000


@pytest.mark.parametrize(
    ("cpu", "field"),
    [
        ({"quota": -5}, "quota"),
        ({"period": 999}, "period"),
        ({"period": 1_000_001}, "period"),
        ({"shares": 1}, "shares"),
        ({"shares": 262145}, "shares"),
        ({"quota": "20000"}, "quota"),
        ({"quota": True}, "quota"),
    ],
)
def test_bad_values(cpu: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"cpu\.{field}"):
        CpuLimits.from_resources({"cpu": cpu})


def test_update_field_name() -> None:
    with pytest.raises(InvalidArgument, match=r": resources\.cpu\.quota"):
        CpuLimits.from_resources({"cpu": {"quota": 10}}, field="resources")


def test_not_an_object() -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.cpu must be an object"):
        CpuLimits.from_resources({"cpu": 3})


def test_v1_files_write_period_before_quota() -> None:
    assert v1_files(CpuLimits(shares=2, quota=20000, period=50000)) == [
        ("cpu.shares", "2"),
        ("cpu.cfs_period_us", "50000"),
        ("cpu.cfs_quota_us", "20000"),
    ]


def test_shares_to_weight_is_runcs_linear_mapping() -> None:
    assert shares_to_weight(2) == 1
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(1) == 1  # clamped like the kernel clamps shares


def test_v2_files() -> None:
    assert v2_files(CpuLimits(shares=1024, quota=20000, period=100000)) == [
        ("cpu.weight", "39"),
        ("cpu.max", "20000 100000"),
    ]
    assert v2_files(CpuLimits(quota=-1)) == [("cpu.max", "max 100000")]
    # an update of one half keeps the other from the file's present text
    assert v2_files(CpuLimits(period=50000), current_max="30000 100000\n") == [
        ("cpu.max", "30000 50000")
    ]
    assert v2_files(CpuLimits(quota=5000), current_max="max 20000") == [("cpu.max", "5000 20000")]
    assert v2_files(CpuLimits()) == []
