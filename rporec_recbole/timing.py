"""Wall time and peak memory of the phases of a run (reasoning generation, stage 1, stage 2, evaluation).

Phases nest (stage 1 evaluates on valid after each epoch, an evaluation may first generate reasoning): each
phase counts only its own time, never that of a phase running inside it, so the phases add up to the time they
cover together. Peak memory is the process's resident-set high-water mark, reset when a phase (re)starts where
Linux allows it (``/proc/self/clear_refs``), else the peak since the process started. That reset also resets
``getrusage``'s ``ru_maxrss``, so the process's own peak is kept apart (``process_peak_rss_mb``).
"""
import os
import platform
import resource
import time
from contextlib import contextmanager


_peak_wiped_by_resets_mb = 0.0  # the highest high-water mark a reset has wiped so far


def _reset_peak_rss():
    global _peak_wiped_by_resets_mb
    _peak_wiped_by_resets_mb = process_peak_rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb():
    """Resident-set high-water mark (since the last reset where there is one) in MB."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mb():
    """The process's resident-set high-water mark since it started, in MB, across the phases' resets: what a run's
    peak memory is (``ru_maxrss`` alone would give the peak since the last phase began)."""
    return max(_peak_wiped_by_resets_mb, peak_rss_mb())


def resident_mb():
    """The process's resident set now, in MB (Linux's ``/proc/self/statm``); None where there is none."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


class PhaseTimer:
    def __init__(self):
        self.phases = {}  # name -> {"seconds", "peak_rss_mb", "calls"}, in order of first use
        self._stack = []  # names of the running phases, innermost last
        self._since = None  # when the innermost running phase last (re)started

    @contextmanager
    def __call__(self, name):
        self._pause_current()
        self.phases.setdefault(name, {"seconds": 0.0, "peak_rss_mb": 0.0, "calls": 0})["calls"] += 1
        self._stack.append(name)
        self._resume_current()
        try:
            yield
        finally:
            self._pause_current()
            self._stack.pop()
            self._resume_current()

    def _pause_current(self):
        if self._stack:
            entry = self.phases[self._stack[-1]]
            entry["seconds"] += time.perf_counter() - self._since
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], peak_rss_mb())

    def _resume_current(self):
        if self._stack:
            _reset_peak_rss()
            self._since = time.perf_counter()

    def summary(self):
        """{phase: {"seconds", "peak_rss_mb", "calls"}} rounded, for logs and JSON."""
        return {name: {"seconds": round(e["seconds"], 1), "peak_rss_mb": round(e["peak_rss_mb"], 1),
                       "calls": e["calls"]} for name, e in self.phases.items()}


def cpu_model():
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"): this project's machines are of both kinds
    (the Xeons here have AMX for bf16, the EPYCs do not), so a wall time means little without it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def machine_description():
    """CPU model, core count and torch version: the machine a benchmark's numbers belong to."""
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__}
