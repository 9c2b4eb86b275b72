"""The RecBole baselines the comparison names run through the plugin's runner, and their checkpoints reload."""
import json

import pytest

from conftest import mini_config
from rporec_recbole.quick_start import run_recbole_rporec
from rporec_recbole.recommend import main as recommend_main


@pytest.mark.parametrize("model", ["GRU4Rec", "BERT4Rec", "FPMC"])  # FPMC: a sequential model with user embeddings
def test_a_recbole_baseline_trains_tests_and_recommends_from_its_checkpoint(model, mini_movielens, tmp_path, capsys):
    result = run_recbole_rporec(model, "ml-mini", config_dict=mini_config(mini_movielens, tmp_path, epochs=2))
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
    recommend_main(["--checkpoint", result["checkpoint"], "--user", "7", "--topk", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == model and [r["rank"] for r in out["recommendations"]] == [1, 2, 3]
    seen = {h["item"] for h in out["history"]}
    assert not seen & {r["item"] for r in out["recommendations"]}
    # regression: a baseline's items had blank titles although its dataset config names the title field
    assert all(entry["title"] for entry in out["history"] + out["recommendations"])
    assert "reasoning" not in out


def test_recommend_refuses_a_model_that_reads_no_history(mini_movielens, tmp_path):
    result = run_recbole_rporec("Pop", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path))
    with pytest.raises(SystemExit, match="Pop is not a sequential model"):
        recommend_main(["--checkpoint", result["checkpoint"], "--user", "7"])
