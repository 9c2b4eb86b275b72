"""PhaseTimer: nested phases count only their own time and their own peak memory."""
import json
import os
import subprocess
import sys
import time

import pytest

from rporec_recbole.timing import PhaseTimer, peak_rss_mb


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
from rporec_recbole.timing import PhaseTimer
timer = PhaseTimer()
with timer("small"):
    pass
with timer("big"):
    block = bytearray(300 * 1024 * 1024)  # pages written, so resident
    del block  # a block this size is its own mapping: freeing it hands it back to the OS
with timer("after"):
    pass
print(json.dumps({name: phase["peak_rss_mb"] for name, phase in timer.phases.items()}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="per-phase peaks need Linux's clear_refs")
def test_peak_memory_of_a_phase_sees_its_allocations_and_only_its_own():
    # a fresh process: the test session's own heap (kept by keep_freed_memory) would hide the phases' differences
    script = "import json\n" + PHASES
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    peaks = json.loads(out.strip().splitlines()[-1])
    assert peaks["big"] - peaks["small"] >= 250
    assert peaks["after"] < peaks["big"] - 250  # the peak was reset when "after" began
    assert peak_rss_mb() > 0

