"""A trial's own usage figures (trainables.usage), measured for real in this process."""

from __future__ import annotations

import time

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


def test_memory_peak_is_a_high_water_mark_that_sees_a_freed_allocation() -> None:
    meter = UsageMeter("cpu", cpus=1)
    before = meter.sample()[PROCESS_MEMORY_PEAK]
    block = np.ones(200 * 2**20 // 8)  # 200 MB, touched, then freed
    del block
    after = meter.sample()[PROCESS_MEMORY_PEAK]
    assert after >= before + 150
    assert meter.sample()[PROCESS_MEMORY_PEAK] >= after - 1  # a peak does not go down
