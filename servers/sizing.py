"""The product sheet's sizing guideline: configured users → disk IOPS and bandwidth.

The sheet gives a "typical ISP" table and recommends three times that capacity for a fast,
user-engaging service.
"""

from __future__ import annotations

from dataclasses import dataclass

# (configured users, single-site disk IOPS, average bandwidth Mbit/s) from the sheet.
GUIDELINE: tuple[tuple[int, int, int], ...] = (
    (500, 800, 3),
    (1000, 1000, 5),
    (5000, 3000, 40),
    (20000, 12000, 160),
    (50000, 30000, 250),
)
RECOMMENDED_FACTOR = 3


@dataclass(frozen=True)
class Sizing:
    users: int
    guideline_users: int
    iops: int
    bandwidth_mbit: int
    recommended_iops: int
    recommended_bandwidth_mbit: int
    beyond_table: bool


def for_users(users: int) -> Sizing:
    """The first guideline row that covers ``users``; beyond the table, scale the last row."""
    for row_users, iops, bandwidth in GUIDELINE:
        if users <= row_users:
            return Sizing(
                users,
                row_users,
                iops,
                bandwidth,
                iops * RECOMMENDED_FACTOR,
                bandwidth * RECOMMENDED_FACTOR,
                False,
            )
    row_users, iops, bandwidth = GUIDELINE[-1]
    scale = users / row_users
    scaled_iops, scaled_bw = int(iops * scale + 0.5), int(bandwidth * scale + 0.5)
    return Sizing(
        users,
        users,
        scaled_iops,
        scaled_bw,
        scaled_iops * RECOMMENDED_FACTOR,
        scaled_bw * RECOMMENDED_FACTOR,
        True,
    )
