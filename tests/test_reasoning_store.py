import json

from rporec_recbole.reasoning_store import ReasoningStore

SETTINGS = {"llm_path": "tiny", "top_p": 0.95}


def test_entries_survive_reopening_and_only_missing_prompts_are_generated(tmp_path):
    store = ReasoningStore(tmp_path, SETTINGS)
    todo = store.missing(["a", "b", "a"])
    assert todo == ["a", "b"]
    store.add(todo, [f"r:{p}" for p in todo])
    reopened = ReasoningStore(tmp_path, SETTINGS)
    assert reopened.get("a") == "r:a" and len(reopened) == 2
    assert reopened.missing(["a", "b", "c"]) == ["c"]


def test_other_settings_never_reuse_stale_text(tmp_path):
    ReasoningStore(tmp_path, SETTINGS).add(["a"], ["old"])
    other = ReasoningStore(tmp_path, {**SETTINGS, "top_p": 0.9})
    assert other.get("a") is None and other.folder != ReasoningStore(tmp_path, SETTINGS).folder


def test_torn_last_line_is_cut_and_appends_stay_parseable(tmp_path):
    store = ReasoningStore(tmp_path, SETTINGS)
    store.add(["a", "b"], ["ra", "rb"])
    with open(store.path, "a") as handle:
        handle.write('{"key": "deadbeef", "te')  # a crash in the middle of a write
    reopened = ReasoningStore(tmp_path, SETTINGS)
    assert len(reopened) == 2
    reopened.add(["c"], ["rc"])
    lines = open(store.path).read().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["ra", "rb", "rc"]
