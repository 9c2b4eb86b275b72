"""PhaseTimer: nested phases count only their own time and their own peak memory."""
import json
import os
import subprocess
import sys
import time

import pytest

from rporec_recbole.timing import PhaseTimer, peak_rss_mb, process_peak_rss_mb


def test_nested_phases_count_only_their_own_time():
    timer = PhaseTimer()
    with timer("outer"):
        time.sleep(0.05)
        with timer("inner"):
            time.sleep(0.1)
        time.sleep(0.05)
    with timer("inner"):
        time.sleep(0.05)
    phases = timer.phases
    assert list(phases) == ["outer", "inner"]
    assert 0.09 <= phases["outer"]["seconds"] < 0.14
    assert 0.14 <= phases["inner"]["seconds"] < 0.2
    assert phases["inner"]["calls"] == 2


PHASES = """
import json
from rporec_recbole.timing import PhaseTimer, process_peak_rss_mb
timer = PhaseTimer()
with timer("small"):
    pass
with timer("big"):
    block = bytearray(300 * 1024 * 1024)  # pages written, so resident
    del block  # a block this size is its own mapping: freeing it hands it back to the OS
with timer("after"):
    pass
print(json.dumps({**{name: phase["peak_rss_mb"] for name, phase in timer.phases.items()},
                  "process": process_peak_rss_mb()}))
"""


@pytest.fixture(scope="module")
def phase_peaks():
    """Peak MB of three phases and of the whole process, measured in a fresh process: the test session's own heap and high-water mark would
    hide their differences. Malloc tunables are dropped so that the freed block really leaves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PHASES], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_peak_memory_of_a_phase_sees_its_allocations(phase_peaks):
    assert phase_peaks["big"] - phase_peaks["small"] >= 250
    assert peak_rss_mb() > 0


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="per-phase peaks need Linux's clear_refs")
def test_peak_memory_of_a_phase_is_its_own(phase_peaks):
    assert phase_peaks["after"] < phase_peaks["big"] - 250  # the high-water mark was reset when "after" began


def test_process_peak_survives_the_phase_resets(phase_peaks):
    # regression: comparison rows took ru_maxrss, which the reset when "after" began also wiped, so RPORec rows
    # reported the peak of their last phase instead of the run's
    assert phase_peaks["process"] >= phase_peaks["big"] - 1
    assert process_peak_rss_mb() >= peak_rss_mb() > 0
