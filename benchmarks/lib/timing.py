"""Clocks and context for timings: GPU sync, alternating rounds, peak memory, machine and load."""

import gc
import os
import platform
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the system has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: device, threads, versions and the current load."""
    info = {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def alternating_rounds(
    names: Sequence[str], rounds: int, measure: Callable[[str, int], Any], rotate: bool = False
) -> dict[str, list[Any]]:
    """``measure(name, round)`` for every name, ``rounds`` times, the names alternating round by
    round (each round starting one name later with ``rotate``), so that load changes on a shared
    machine hit all alike: ``{name: [one result per round]}``."""
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names) if rotate and names else 0
        for name in [*names[shift:], *names[:shift]]:
            results[name].append(measure(name, round_))
    return results


def time_to_target(history: list[tuple[float, float]], target: float) -> dict[str, Any]:
    """``{seconds, epoch, test_acc}`` of the first epoch reaching ``target`` (None if never)."""
    for epoch, (seconds, acc) in enumerate(history, start=1):
        if acc >= target:
            return {"time_to_target_s": seconds, "target_epoch": epoch, "test_acc": acc}
    last = history[-1][1] if history else None
    return {"time_to_target_s": None, "target_epoch": None, "test_acc": last}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Measure the peak memory of the enclosed code in MiB (``result["peak_mib"]``).

    GPU: ``torch.cuda.max_memory_allocated``. CPU: the process's resident set size sampled every
    5 ms in a thread (it includes Python, the libraries and the dataset, the same for all loops).
    """
    result: dict[str, float] = {}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["kind"] = "cuda_max_allocated"
        return
    if not Path("/proc/self/statm").exists():  # not Linux: lifetime peak from resource
        import resource

        yield result
        scale = 1 if sys.platform == "darwin" else 1024
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        result["kind"] = "ru_maxrss"
        return
    peak, done = [_rss_bytes()], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["peak_mib"] = max(peak[0], _rss_bytes()) / 2**20
        result["kind"] = "rss"
