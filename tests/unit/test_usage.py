"""A trial's own usage figures (trainables.usage), measured for real in this process."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from trainables.usage import CPU_UTILIZATION, PROCESS_MEMORY_PEAK, UsageMeter


def test_cpu_share_follows_the_work_done_in_the_window() -> None:
    meter = UsageMeter("cpu", cpus=1)
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # busy: about one CPU's worth
        pass
    busy = meter.sample()
    time.sleep(0.3)  # idle
    idle = meter.sample()
    assert busy["device"] == "cpu"
    assert busy[CPU_UTILIZATION] > 50
    assert idle[CPU_UTILIZATION] < 20


def _resident_megabytes() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def test_memory_peak_is_the_trials_own_high_water_mark() -> None:
    earlier = np.ones(300 * 2**20 // 8)  # a peak from before the trial
    del earlier
    meter = UsageMeter("cpu", cpus=1)  # resets the kernel's high-water mark
    start = meter.sample()[PROCESS_MEMORY_PEAK]
    assert start < _resident_megabytes() + 50  # the earlier 300 MB peak is not the trial's

    block = np.ones(200 * 2**20 // 8)  # touched: resident
    resident = _resident_megabytes()
    during = meter.sample()[PROCESS_MEMORY_PEAK]
    del block
    # Never below what is resident (the block's pages may have been resident before, in a
    # process that freed memory without returning it: the mark need not rise by 200 MB).
    assert during >= resident - 1
    assert meter.sample()[PROCESS_MEMORY_PEAK] >= during - 1  # and it does not go down
