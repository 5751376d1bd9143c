"""What a trial used, epoch by epoch: its device, CPU share, memory high-water marks, GPU load.

Each report of a trial carries these as metrics under ``system/``, the prefix MLflow's UI shows
in a run's "System metrics" tab, so a child run shows its own trial's usage there. They are the
trial's own figures, not the host's (MLflow's monitor samples the whole machine, which says
nothing when four trials share it):

* ``system/cpu_utilization_percentage``: this process's CPU time over the epoch's wall time,
  as a share of the CPUs the trial reserved (above 100 when it used more than it reserved);
* ``system/process_memory_peak_megabytes``: the process's resident-memory high-water mark
  since the trial started (the kernel's counter is reset at the start where Linux allows it;
  elsewhere it spans the process's life, which a reused trial actor shares between trials);
* ``system/gpu_memory_peak_megabytes``: the most device memory the trial's framework held
  at once since the trial started (torch's or TensorFlow's allocator), on a GPU only;
* ``system/gpu_utilization_percentage``: the GPU's busy share since the last sample, from
  NVML (``nvidia-ml-py``, in the ``gpu`` extra), for the whole device: trials packed on one
  GPU report the same value.

The report's ``device`` names what the trial computed on (``cpu`` or ``cuda:0 <name>``); the
tracking side tags the child run with it and with the Ray node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from trainables.results import DEVICE

_log = logging.getLogger(__name__)

CPU_UTILIZATION = "system/cpu_utilization_percentage"
PROCESS_MEMORY_PEAK = "system/process_memory_peak_megabytes"
GPU_MEMORY_PEAK = "system/gpu_memory_peak_megabytes"
GPU_UTILIZATION = "system/gpu_utilization_percentage"
_MB = 2**20


class UsageMeter:
    """Measures one trial's usage between two :meth:`sample` calls (one epoch each)."""

    def __init__(self, device: str, cpus: int) -> None:
        """Start measuring for a trial on ``device`` (``"cpu"``, ``"cuda"``) with ``cpus``."""
        self._gpu = device.startswith("cuda")
        self._cpus = max(1, cpus)
        self.device = _describe(device) if self._gpu else "cpu"
        _reset_memory_peaks(self._gpu)
        self._nvml = _NvmlDevice.open() if self._gpu else None
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def sample(self) -> dict[str, Any]:
        """Return the usage since the last sample (or the start) and start a new window."""
        wall, cpu = time.monotonic(), time.process_time()
        elapsed = max(wall - self._wall, 1e-9)
        usage: dict[str, Any] = {
            DEVICE: self.device,
            CPU_UTILIZATION: round(100.0 * (cpu - self._cpu) / elapsed / self._cpus, 2),
            PROCESS_MEMORY_PEAK: round(_process_peak_bytes() / _MB, 2),
        }
        self._wall, self._cpu = wall, cpu
        if self._gpu:
            peak = _gpu_peak_bytes()
            if peak is not None:
                usage[GPU_MEMORY_PEAK] = round(peak / _MB, 2)
            if self._nvml is not None:
                busy = self._nvml.utilization()
                if busy is not None:
                    usage[GPU_UTILIZATION] = busy
        return usage


def _describe(device: str) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return device


def _reset_memory_peaks(gpu: bool) -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux 4.0+): the peak is then this trial's, not
    # the reused actor's earlier trials'. Not allowed everywhere (containers): then it spans
    # the process's life, as documented above.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    torch = sys.modules.get("torch")
    if gpu and torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tf = sys.modules.get("tensorflow")
    if gpu and tf is not None:
        for index, _ in enumerate(tf.config.list_logical_devices("GPU")):
            tf.config.experimental.reset_memory_stats(f"GPU:{index}")


def _process_peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _gpu_peak_bytes() -> int | None:
    """Return the framework allocator's peak on the trial's GPU (torch first, then TF)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.config.list_logical_devices("GPU"):
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    return None


class _NvmlDevice:
    """The trial's GPU as NVML sees it, for its utilisation (None where NVML is missing)."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml, self._handle = nvml, handle
        self._since = int(time.time() * 1e6)

    @classmethod
    def open(cls) -> _NvmlDevice | None:
        try:
            import pynvml
        except ImportError:
            _log.info("nvidia-ml-py is not installed: GPU utilisation is not recorded")
            return None
        try:
            pynvml.nvmlInit()
            return cls(pynvml, pynvml.nvmlDeviceGetHandleByIndex(_physical_gpu_index()))
        except pynvml.NVMLError as exc:
            _log.info("NVML is not usable here (%s): GPU utilisation is not recorded", exc)
            return None

    def utilization(self) -> float | None:
        """Return the mean busy percentage since the last call (NVML's own samples)."""
        try:
            samples = self._nvml.nvmlDeviceGetSamples(
                self._handle, self._nvml.NVML_GPU_UTILIZATION_SAMPLES, self._since
            )[1]
        except self._nvml.NVMLError:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        self._since = int(time.time() * 1e6)
        values = [s.sampleValue.uiVal for s in samples]
        return round(sum(values) / len(values), 2) if values else None


def _physical_gpu_index() -> int:
    """Return the NVML index of the trial's first GPU (Ray narrows CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0
