"""The benchmark probes of a trained run's reasoning: benchmarks/reasoning_signal.py (zero-shot ranking by the text
alone) and benchmarks/reasoning_effect.py (the trained model with and without its reasoning)."""
import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import BENCHMARKS, mini_config
from reasoning_effect import stores  # benchmarks/, on the path through conftest
from reasoning_signal import ndcg_and_recall
from rporec_recbole.quick_start import run_recbole_rporec


def test_ndcg_and_recall_rank_against_every_item_but_the_padding():
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.2],    # target 2 first once the padding item 0 is out
                           [0.0, 0.9, 0.8, 0.1, 0.7],    # target 3 fourth
                           [0.0, 0.9, 0.8, 0.1, 0.7]])   # target 2 second
    ndcg, recall = ndcg_and_recall(scores, torch.tensor([2, 3, 2]), k=3)
    assert ndcg == round((1 + 0 + 1 / math.log2(3)) / 3, 4)
    assert recall == round(2 / 3, 4)


def _store(root, name, texts, **settings):
    folder = root / name
    folder.mkdir()
    base = {"llm_path": "embedded:smollm2-135m", "llm_seed": 2020, "template": "t1", "policy": "initial"}
    (folder / "settings.json").write_text(json.dumps({**base, **settings}))
    (folder / "reasoning.jsonl").write_text("".join(json.dumps({"key": k, "text": v}) + "\n" for k, v in texts.items()))


def test_stores_are_the_runs_own(tmp_path):
    # regression: stores were keyed by policy alone, so another seed's "initial" store could stand in for the run's
    _store(tmp_path, "a", {"k": "seed 2021's"}, llm_seed=2021)
    _store(tmp_path, "b", {"k": "this run's"})
    _store(tmp_path, "c", {"k": "other model's"}, llm_path="tiny-random")
    _store(tmp_path, "d", {"k": "forced"}, force_answer=True)
    _store(tmp_path, "e", {"k": "tuned"}, policy="grpo-1")
    _store(tmp_path, "f", {"k": "longer"}, max_new_tokens=256)
    _store(tmp_path, "g", {"k": "an item"}, force_answer=True, constrain_answer=True)
    run = {"llm_path": "embedded:smollm2-135m", "llm_seed": 2020, "template": "t1"}
    assert stores(str(tmp_path), run) == {"initial": {"k": "this run's"}, "initial (forced)": {"k": "forced"},
                                          "grpo-1": {"k": "tuned"}, "initial [f]": {"k": "longer"},
                                          "initial (forced, item answers)": {"k": "an item"}}


@pytest.fixture(scope="module")
def trained_run(mini_movielens, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("probe")
    config = mini_config(mini_movielens, tmp_path)
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=config)
    return result["checkpoint"], config["reasoning_dir"]


def _run(script, checkpoint, reasoning_dir, *extra):
    done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), f"--checkpoint={checkpoint}",
                           f"--reasoning_dir={reasoning_dir}", *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _signal_table(out):
    rows = ([c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| "))
    return {cells[0]: cells[1:] for cells in rows if cells[0] != "query"}


def test_reasoning_signal_scores_each_query_on_the_rows_that_have_its_text(trained_run):
    out = _run("reasoning_signal.py", *trained_run, "--split=test")
    header = re.search(r"test rows: (\d+), with reasoning text: (\d+), in the think/answer format: (\d+)", out)
    rows, with_text, in_format = map(int, header.groups())
    table = _signal_table(out)
    assert list(table) == ["prompt window", "reasoning", "answer", "prompt + reasoning", "chance (random scores)"]
    assert rows == 40 and int(table["prompt window"][0]) == rows and int(table["reasoning"][0]) <= with_text
    assert int(table["answer"][0]) <= rows and in_format <= with_text
    metrics = [value for _, *values in table.values() for value in values if value != "-"]
    assert len(metrics) >= 6 and all(0 <= float(value) <= 1 for value in metrics)


def test_reasoning_signal_ranks_the_target_in_the_top_10_when_each_answer_is_its_text(trained_run, tmp_path):
    """A known answer: a store whose every answer is the test target's own item text (within the item table's token
    limit, so its embedding is the target's row of E) must put the target in the top 10 of every such row; the rows
    and the store's texts must line up for that (a shifted or mis-keyed row scores near chance)."""
    from reasoning_effect import run_identity
    from rporec_recbole.quick_start import load_run
    from rporec_recbole.reasoning_store import prompt_key

    checkpoint, reasoning_dir = trained_run
    config, _, (_, _, test_data), model = load_run(checkpoint, use_gpu=False)
    feat = test_data._dataset.inter_feat
    token_count = lambda text: len(model.reasoning.embedder.tokenizer(text, add_special_tokens=False).input_ids)
    texts, kept = {}, 0
    for window, target in zip(model.windows(feat[model.ITEM_SEQ], feat[model.ITEM_SEQ_LEN]),
                              feat[model.POS_ITEM_ID].tolist()):
        answer = model.item_texts[target]
        if answer == answer.strip() and token_count(answer) <= config["max_item_text_tokens"]:
            texts[prompt_key(model.prompts.build(window))] = f"a guess</think><answer>{answer}</answer>"
            kept += 1
    assert len(texts) == kept >= 20  # no two kept rows share a prompt (one would carry the other's answer)
    oracle_dir = tmp_path / "reasoning"
    shutil.copytree(reasoning_dir, oracle_dir)
    _store(oracle_dir / config["dataset"], "oracle", texts, policy="oracle", **run_identity(config, model))
    out = _run("reasoning_signal.py", checkpoint, str(oracle_dir), "--split=test", "--policy=oracle")
    assert f"with reasoning text: {kept}, in the think/answer format: {kept}," in out
    table = _signal_table(out)
    rows, ndcg, recall = table["answer"]
    assert int(rows) == len(texts) and float(recall) == 1.0 and float(ndcg) > 0.9
    assert float(table["prompt window"][1]) < 0.5  # the history alone is no oracle


def test_reasoning_effect_scores_the_model_with_its_reasoning_and_without(trained_run):
    out = _run("reasoning_effect.py", *trained_run)
    initial = re.search(r"^initial \{'ndcg@10': ([0-9.]+), 'with_text': (\d+)", out, re.M)
    none = re.search(r"^no reasoning \{'ndcg@10': ([0-9.]+), 'with_text': 0", out, re.M)
    assert initial and none and int(initial.group(2)) == 40
    assert 0 <= float(initial.group(1)) <= 1 and 0 <= float(none.group(1)) <= 1


def test_reasoning_effect_scores_each_store_with_its_own_texts(trained_run, tmp_path):
    """Known answers: a copy of the initial store under another policy scores exactly as the initial one (no score
    moves, no top-10 changes); a copy holding every other text scores those rows only, and its scores move; so does
    dropping the reasoning, for a model trained with it."""
    checkpoint, reasoning_dir = trained_run
    stores_dir = tmp_path / "reasoning"
    shutil.copytree(reasoning_dir, stores_dir)
    (initial,) = [folder for folder in (stores_dir / "ml-mini").iterdir()
                  if json.loads((folder / "settings.json").read_text())["policy"] == "initial"]
    settings = json.loads((initial / "settings.json").read_text())
    entries = [json.loads(line) for line in (initial / "reasoning.jsonl").read_text().splitlines()]
    for policy, kept in (("copy", entries), ("half", entries[::2])):
        _store(stores_dir / "ml-mini", policy, {e["key"]: e["text"] for e in kept}, **{**settings, "policy": policy})
    out = _run("reasoning_effect.py", checkpoint, str(stores_dir))
    rows = {line.split(" {")[0]: ast.literal_eval(line[line.index("{"):]) for line in out.splitlines() if " {" in line}
    assert set(rows) == {"initial", "copy", "half", "no reasoning"}
    assert rows["copy"]["ndcg@10"] == rows["initial"]["ndcg@10"] and rows["copy"]["with_text"] == 40
    assert rows["copy"]["mean_abs_score_change"] == 0 and rows["copy"]["users_with_changed_top10"] == 0
    assert 0 < rows["half"]["with_text"] < 40 and rows["half"]["mean_abs_score_change"] > 0
    assert rows["no reasoning"]["mean_abs_score_change"] > 0


def test_reasoning_effect_on_train_scores_the_rows_stage_1_had_reasoning_for(trained_run):
    # one row per user (reasoning_train_per_user: 1), and each found in the store: the rows stage 1 generated reasoning for
    out = _run("reasoning_effect.py", *trained_run, "--split=train")
    assert re.search(r"^train rows: 40$", out, re.M)
    initial = re.search(r"^initial \{'ndcg@10': ([0-9.]+), 'with_text': (\d+)", out, re.M)
    assert initial and int(initial.group(2)) == 40
