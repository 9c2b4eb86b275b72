"""PhaseTimer: nested phases count only their own time."""
import time

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


def test_peak_memory_of_a_phase_sees_its_allocations():
    timer = PhaseTimer()
    with timer("small"):
        pass
    with timer("big"):
        block = bytearray(300 * 1024 * 1024)  # pages written, so resident
        del block
    assert timer.phases["big"]["peak_rss_mb"] >= 300
    assert peak_rss_mb() > 0

