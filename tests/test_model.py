"""End to end through the runner, plugin lookup, checkpoints and the RecBole traps."""
import json
import os
import subprocess
import sys

import pytest
import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.trainer import Trainer

from conftest import RUNNER, mini_config, mini_model
from rporec_recbole import Config, RPORec, RPORecTrainer, get_model, get_trainer, run_recbole_rporec
from rporec_recbole.checkpoint import SafeCheckpointMixin, load_checkpoint, load_config_dict
from rporec_recbole.item_popularity import popularity_bands, training_counts
from rporec_recbole.per_user import per_user_ndcg
from rporec_recbole.quick_start import DatasetNotFoundError, ensure_dataset

METRICS = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "hit") for k in (5, 10, 20)]


@pytest.fixture(scope="module")
def rporec_run(mini_movielens, tmp_path_factory):
    """One end-to-end RPORec run on ml-mini shared by the tests below: ``(result, run folder)``."""
    tmp_path = tmp_path_factory.mktemp("rporec_run")
    return run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path)), tmp_path


def test_rporec_end_to_end(rporec_run, mini_movielens):
    result, tmp_path = rporec_run
    assert list(result["test_result"]) == METRICS
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    # the checkpoint is a safetensors folder that evaluate(load_best_model=True) reloaded without pickle
    assert sorted(os.listdir(result["checkpoint"])) == ["config.yaml", "last", "model.safetensors",
                                                         "optimizer.safetensors", "trainer_state.json"]
    saved = load_config_dict(result["checkpoint"])
    rebuilt = Config(model=saved["model"], dataset=saved["dataset"], config_dict=saved)
    assert rebuilt["data_path"] == os.path.join(mini_movielens, "ml-mini")
    assert rebuilt["history_window"] == 5 and rebuilt["llm_path"] == "tiny-random"
    # each user's test and valid results are kept, averaging to the reported metrics of the tested model
    for split, reported in (("test", result["test_result"]), ("valid", result["best_valid_result"])):
        (evaluation,) = result[f"per_user_{split}"].values()
        ndcg = per_user_ndcg(evaluation, k=10)
        assert list(result[f"per_user_{split}"]) == [split] and len(ndcg) == 40
        assert round(sum(ndcg.values()) / len(ndcg), 4) == reported["ndcg@10"]
    (store,) = os.listdir(tmp_path / "reasoning" / "ml-mini")
    lines = (tmp_path / "reasoning" / "ml-mini" / store / "reasoning.jsonl").read_text().splitlines()
    # 40 users: one training prompt each, plus valid and test prompts (duplicate prompts share an entry)
    assert 40 < len(lines) <= 3 * 40


def test_run_reports_phases_and_where_its_outputs_are(rporec_run, caplog):
    result, tmp_path = rporec_run
    phases = result["phases"]
    assert {"reasoning generation (train)", "reasoning generation (valid)", "stage 1 (RecHead training)",
            "evaluation"} <= set(phases)
    assert all(p["seconds"] >= 0 and p["peak_rss_mb"] > 0 for p in phases.values())
    # the valid evaluations inside stage 1 are counted under "evaluation", not twice
    assert phases["evaluation"]["calls"] > 1
    after_training = result["eval_seconds"] + result["per_user_valid_seconds"]
    assert sum(p["seconds"] for p in phases.values()) <= result["train_seconds"] + after_training + 1
    outputs = result["outputs"]
    assert set(outputs) == {"checkpoint", "log", "TensorBoard", "reasoning store"}
    assert all(os.path.exists(path) for path in outputs.values())
    assert outputs["reasoning store"] == str(tmp_path / "reasoning" / "ml-mini")


def test_stage1_optimizer_is_fused_adam(mini_movielens, tmp_path):
    config, model, _ = mini_model(mini_movielens, tmp_path)
    trainer = RPORecTrainer(config, model)
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.optimizer.defaults["fused"] is True


def test_baseline_runs_through_the_same_runner(mini_movielens, tmp_path):
    result = run_recbole_rporec("SASRec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path,
                                                                            train_batch_size=256))
    assert list(result["test_result"]) == METRICS


def test_plugin_lookup_then_recbole_fallback():
    assert get_model("RPORec") is RPORec
    assert get_model("SASRec") is SASRec
    with pytest.raises(ValueError, match="Unknown model 'NoSuchModel'"):
        get_model("NoSuchModel")
    from recbole.utils import ModelType

    assert get_trainer(ModelType.SEQUENTIAL, "RPORec") is RPORecTrainer
    baseline_trainer = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(baseline_trainer, SafeCheckpointMixin) and issubclass(baseline_trainer, Trainer)


def test_config_reads_plugin_yamls_and_leaves_cuda_alone(monkeypatch, mini_movielens):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    config = Config(model="RPORec", dataset="ml-100k", config_dict={"history_window": 7})
    assert config["history_window"] == 7  # config dict beats the plugin yaml
    assert config["loss_type"] == "CE"  # from properties/RPORec.yaml
    assert config["item_title_field"] == "movie_title"  # from properties/dataset/ml-100k.yaml
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert config["device"] == torch.device("cpu")


@pytest.mark.parametrize("dataset", ["ml-100k", "Beauty"])
def test_rporec_and_the_baselines_share_budget_split_and_metrics(dataset):
    """A fair side-by-side: RPORec's stage 1 gets the patience RecBole gives SASRec (its 10-epoch, patience-2
    budget cost it 0.83x of SASRec on ml-100k; benchmarks/comparison_record.md), on the same split and metrics."""
    rporec = Config(model="RPORec", dataset=dataset)
    sasrec = Config(model="SASRec", dataset=dataset)
    for key in ("epochs", "stopping_step", "valid_metric", "eval_args", "metrics", "topk"):
        assert rporec[key] == sasrec[key], key


def test_missing_dataset_without_internet_says_where_to_put_files(tmp_path, monkeypatch):
    def no_network(*args):
        raise OSError("Network is unreachable")

    monkeypatch.setattr("rporec_recbole.quick_start._download", no_network)
    config = {"data_path": str(tmp_path / "ml-1m"), "dataset": "ml-1m"}
    with pytest.raises(DatasetNotFoundError, match=r"not in .*ml-1m/ and downloading it from https://.*failed.*"
                                                   r"rporec_recbole.prepare"):
        ensure_dataset(config)
    with pytest.raises(DatasetNotFoundError, match="Unknown dataset 'nonsense'"):
        ensure_dataset({"data_path": str(tmp_path / "nonsense"), "dataset": "nonsense"})


def test_runner_prints_one_clear_line_for_missing_dataset(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, RUNNER, "--model=SASRec",
                           "--dataset=nonsense", f"--data_path={tmp_path}", "--state=WARNING"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Unknown dataset 'nonsense'")
    assert "Traceback" not in proc.stderr


def test_download_failure_is_a_network_error_not_a_code_error(tmp_path):
    """Regression: the download helper once imported a RecBole function from the wrong module."""
    from rporec_recbole.quick_start import _download

    with pytest.raises(OSError):  # nothing listens on the discard port of this machine
        _download("http://127.0.0.1:9/ml-1m.zip", str(tmp_path), "ml-1m", timeout=5)


def test_recommend_from_a_trained_run(rporec_run, capsys):
    from rporec_recbole.recommend import main as recommend_main

    result, _ = rporec_run
    recommend_main(["--checkpoint", result["checkpoint"], "--user", "7", "--topk", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in out["recommendations"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in out["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    seen = {h["item"] for h in out["history"]}
    assert not seen & {r["item"] for r in out["recommendations"]}
    assert out["history"][0]["title"] and "reasoning" in out
    with pytest.raises(SystemExit, match="user 'nobody' is not in dataset"):
        recommend_main(["--checkpoint", result["checkpoint"], "--user", "nobody"])


def test_recommend_from_a_cross_entropy_baseline(mini_movielens, tmp_path, capsys):
    """Regression: a CE baseline's saved config held RecBole's resolved "no negative sampling", which RecBole then
    refused on reload ("should be None when the loss_type is CE"), so recommend failed for SASRec/GRU4Rec."""
    from rporec_recbole.recommend import main as recommend_main

    result = run_recbole_rporec("SASRec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path))
    assert load_config_dict(result["checkpoint"])["loss_type"] == "CE"
    recommend_main(["--checkpoint", result["checkpoint"], "--user", "7", "--topk", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "SASRec" and [r["rank"] for r in out["recommendations"]] == [1, 2, 3]


def test_same_seed_same_command_gives_the_same_metrics(mini_movielens, tmp_path):
    # separate folders: the second run generates its reasoning again instead of reading the first run's store
    runs = [run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path / name,
                                                                           epochs=2))
            for name in ("first", "second")]
    assert runs[0]["test_result"] == runs[1]["test_result"]
    assert runs[0]["best_valid_result"] == runs[1]["best_valid_result"]
    other_seed = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path / "third",
                                                                                epochs=2, seed=7))
    assert other_seed["test_result"] != runs[0]["test_result"]  # the comparison above can fail


def _store_entries(reasoning_dir):
    """``{store folder: (its llm_seed, its number of entries)}`` of the reasoning stores under ``reasoning_dir``."""
    entries = {}
    for folder in os.listdir(reasoning_dir):
        settings = json.loads((reasoning_dir / folder / "settings.json").read_text())
        lines = (reasoning_dir / folder / "reasoning.jsonl").read_text().splitlines()
        entries[folder] = (settings["llm_seed"], len(lines))
    return entries


def test_a_fixed_reasoning_seed_lets_runs_of_other_seeds_read_one_sample_of_reasoning(mini_movielens, tmp_path):
    reasoning_dir = tmp_path / "reasoning" / "ml-mini"

    def run(name, **overrides):
        config = mini_config(mini_movielens, tmp_path, checkpoint_dir=str(tmp_path / name), **overrides)
        return run_recbole_rporec("RPORec", "ml-mini", config_dict=config)

    first = run("first", seed=2020, reasoning_seed=3)
    (store, (seed, written)), = _store_entries(reasoning_dir).items()
    assert seed == 3 and written > 40
    second = run("second", seed=7, reasoning_seed=3)
    assert _store_entries(reasoning_dir) == {store: (3, written)}  # nothing generated: every prompt read back
    assert second["test_result"] != first["test_result"]  # the RecHead still trains from its own seed
    run("third", seed=7)  # without it, the run's seed samples its own reasoning
    assert sorted(_store_entries(reasoning_dir).values()) == [(3, written), (7, written)]


def test_the_reasoning_seed_also_seeds_a_random_llms_weights(mini_movielens, tmp_path):
    def llm_weights(**overrides):
        _, model, _ = mini_model(mini_movielens, tmp_path, **overrides)
        return model.backbone.model.get_input_embeddings().weight

    fixed = llm_weights(seed=2020, reasoning_seed=3)
    assert torch.equal(fixed, llm_weights(seed=7, reasoning_seed=3))
    assert not torch.equal(fixed, llm_weights(seed=7))


def _nan_on_calls(monkeypatch, bad_calls):
    """RPORec.calculate_loss returns NaN on the given (1-based) calls."""
    original, calls = RPORec.calculate_loss, []

    def calculate_loss(self, interaction):
        calls.append(1)
        loss = original(self, interaction)
        return loss * float("nan") if len(calls) in bad_calls else loss

    monkeypatch.setattr(RPORec, "calculate_loss", calculate_loss)
    return calls


def test_nonfinite_stage1_batch_is_skipped_and_training_goes_on(mini_movielens, tmp_path, monkeypatch):
    calls = _nan_on_calls(monkeypatch, {1, 2})
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
        mini_movielens, tmp_path, train_batch_size=8 * 49, max_nonfinite_steps=3))
    assert len(calls) > 3  # it trained on after the two bad batches
    state = load_checkpoint(result["checkpoint"])[0]
    assert all(torch.isfinite(tensor).all() for tensor in state.values())  # no NaN reached the weights


def test_too_many_nonfinite_batches_in_a_row_stop_stage1(mini_movielens, tmp_path, monkeypatch):
    _nan_on_calls(monkeypatch, {1, 2, 3})
    with pytest.raises(ValueError, match="3 batches in a row had a non-finite loss"):
        run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
            mini_movielens, tmp_path, train_batch_size=8 * 49, max_nonfinite_steps=3))


def test_importing_the_plugin_and_recbole_models_leaves_anomaly_detection_off():
    # regression: RecBole's sine.py turns anomaly detection on at import (every backward ~2x slower)
    code = ("import torch, rporec_recbole; from rporec_recbole import get_model; get_model('SASRec'); "
            "get_model('SINE'); print(torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("header, row, message", [
    ("user_id:token\titem_id:tokn\ttimestamp:float", "1\t2\t3", "header column 'item_id:tokn' must be name:type"),
    ("user_id:token\titem_id:token\ttimestamp:float", "1\t2", "ml-bad.inter:3: 2 columns, the header has 3"),
    ("user_id:token\titem_id:token\ttimestamp:float", "1\t2\tyesterday", "timestamp must be a number"),
])
def test_malformed_atomic_file_is_one_clear_error(tmp_path, header, row, message):
    folder = tmp_path / "ml-bad"
    folder.mkdir()
    (folder / "ml-bad.inter").write_text(f"{header}\n1\t1\t1\n{row}\n")
    done = subprocess.run([sys.executable, RUNNER, "--model=SASRec", "--dataset=ml-bad", f"--data_path={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line


def test_mask_dropout_drops_at_rate_p_keeps_the_mean_and_is_off_in_eval():
    from rporec_recbole.model import MaskDropout

    torch.manual_seed(0)
    dropout = MaskDropout(0.2).train()
    for dtype in (torch.float32, torch.bfloat16):  # bf16 draws would drop 52/256 = 20.3%: caught at 1e6 samples
        out = dropout(torch.ones(1_000_000, dtype=dtype))
        assert abs(float((out == 0).float().mean()) - 0.2) < 0.0015
        assert abs(float(out.float().mean()) - 1.0) < 0.005
    x = torch.randn(100)
    assert torch.equal(dropout.eval()(x), x)


def test_model_has_no_bernoulli_dropout_left_and_candidate_scores_equal_full_scores(mini_movielens, tmp_path):
    from rporec_recbole.model import MaskDropout

    _, model, _ = mini_model(mini_movielens, tmp_path)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(type(m) is MaskDropout for m in dropouts)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    users = tuple(torch.randn(6, dim, generator=generator) for dim in (model.item_text_table.shape[1],
                                                                         model.item_embedding.embedding_dim))
    full = model.score(users)
    for count in (3, model.n_items):  # fewer candidates than items: gathered rows; more: one matmul, then gather
        items = torch.randint(model.n_items, (6, count), generator=generator)
        assert torch.allclose(model.score(users, items), full.gather(1, items), atol=1e-5)


def test_sampled_softmax_stage1_is_cross_entropy_over_the_target_and_its_negatives(mini_movielens, tmp_path):
    """``loss_type: sampled_softmax`` (the paper): RecBole's sampler tiles each batch once per negative, and the loss
    is the cross entropy of the target against its 49 uniform negatives' scores (the target in column 0)."""
    overrides = {"loss_type": "sampled_softmax", "use_reasoning": False, "train_batch_size": 8 * 49}
    config, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, **overrides)
    assert config["train_neg_sample_args"]["sample_num"] == 49
    model.eval()
    batch = next(iter(train_data))
    assert len(batch) == 8 * 49
    positives, negatives = batch[model.POS_ITEM_ID][:8], batch[model.NEG_ITEM_ID].view(49, 8).T
    assert (positives.repeat(49) == batch[model.POS_ITEM_ID]).all()  # the same 8 samples, tiled per negative
    scores = model.full_sort_predict(batch[:8])
    candidate_scores = scores.gather(1, torch.cat([positives.unsqueeze(1), negatives], dim=1))
    expected = torch.nn.functional.cross_entropy(candidate_scores, torch.zeros(8, dtype=torch.long))
    assert torch.allclose(model.calculate_loss(batch), expected, atol=1e-5)


def test_cross_entropy_stage1_scores_every_item_without_negative_sampling(mini_movielens, tmp_path):
    """``loss_type: CE`` (as RecBole's SASRec trains): no negatives are sampled and the loss is the cross entropy of
    the target against every item's score; a run goes through the runner end to end."""
    overrides = {"loss_type": "CE", "use_reasoning": False, "train_batch_size": 64}
    config, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, **overrides)
    assert config["train_neg_sample_args"]["distribution"] == "none"
    model.eval()
    batch = next(iter(train_data))
    assert model.NEG_ITEM_ID not in batch and len(batch) == 64
    scores = model.full_sort_predict(batch)
    expected = torch.nn.functional.cross_entropy(scores, batch[model.POS_ITEM_ID])
    assert torch.allclose(model.calculate_loss(batch), expected)
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path, **overrides))
    assert list(result["test_result"]) == METRICS


def test_text_aware_collaborative_items_use_each_items_text_in_input_and_scoring(mini_movielens, tmp_path):
    """``collaborative_item_text``: an item's collaborative vector is its ID embedding plus its projected text, in
    scoring and in the sequence encoder's input, also without the semantic branch; the projection is trained."""
    overrides = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True, "train_batch_size": 64}
    _, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, **overrides)
    model.eval()
    batch = next(iter(train_data))
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    users = (None, model.collaborative_user(seq, seq_len))
    scores = model.score(users)

    edited = int(seq[0, 0])  # an item in the first row's history: its new text moves that row's user vector too
    new_text = torch.randn(model.item_text_table.shape[1], generator=torch.Generator().manual_seed(0))
    model.item_text_table[edited] = new_text  # not a constant shift: the projection's LayerNorm removes those
    moved_scores = model.score(users)
    assert (moved_scores != scores).any(0).nonzero().flatten().tolist() == [edited]
    assert not torch.allclose(model.collaborative_user(seq, seq_len)[0], users[1][0])

    model.train()
    model.calculate_loss(batch).backward()
    assert model.item_text_projection[1].weight.grad.abs().sum() > 0


def test_item_text_on_the_input_side_only_scores_items_by_their_id_embedding(mini_movielens, tmp_path):
    """``collaborative_item_text_in_scoring=False``: an item's text enters the sequence encoder's input but not its
    scoring vector, which is its ID embedding alone (as SASRecF scores); the projection is still trained."""
    overrides = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True,
                 "collaborative_item_text_in_scoring": False, "learned_item_text_tokens": True,
                 "train_batch_size": 64}
    _, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, **overrides)
    model.eval()
    batch = next(iter(train_data))
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    torch.nn.init.normal_(model.item_token_bag.bag.weight)  # they start at zero: make them count
    assert torch.equal(model.collaborative_items(), model.item_embedding.weight)
    user = model.collaborative_user(seq, seq_len)

    edited = int(seq[0, 0])
    model.item_text_table[edited] = torch.randn(model.item_text_table.shape[1],
                                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.collaborative_items(), model.item_embedding.weight)
    assert not torch.allclose(model.collaborative_user(seq, seq_len)[0], user[0])

    model.train()
    model.calculate_loss(batch).backward()
    assert model.item_text_projection[1].weight.grad.abs().sum() > 0
    assert model.item_token_bag.bag.weight.grad.abs().sum() > 0


def test_concat_fusion_maps_id_and_text_into_the_encoder_input_and_keeps_the_summed_scoring(mini_movielens,
                                                                                            tmp_path):
    """``collaborative_item_text_fusion=concat``: the encoder reads ``Linear([E_id[i]; text_i])`` for each history
    item (SASRecF's concat_layer) while items are still scored by their ID embedding plus text; the fusion layer is
    trained, initialised with the branch, and any other value is refused."""
    overrides = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True, "train_batch_size": 64}
    _, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, collaborative_item_text_fusion="concat",
                                              collaborative_initializer_range=0.05, **overrides)
    model.eval()
    batch = next(iter(train_data))
    seq = batch[model.ITEM_SEQ]
    fused = model.sequence_input_items(seq)
    ids, text = model.item_embedding(seq), model.item_text_part(seq)
    expected = ids @ model.item_text_fusion.weight[:, :ids.shape[-1]].T \
        + text @ model.item_text_fusion.weight[:, ids.shape[-1]:].T + model.item_text_fusion.bias
    assert torch.allclose(fused, expected, atol=1e-5)
    assert not torch.allclose(fused, ids + text, atol=1e-3)
    assert torch.equal(model.collaborative_items(), model.item_embedding.weight + model.item_text_part())
    assert model.item_text_fusion in model.collaborative_parts()
    assert abs(float(model.item_text_fusion.weight.detach().std()) - 0.05) < 0.01

    model.train()
    model.calculate_loss(batch).backward()
    assert model.item_text_fusion.weight.grad[:, :ids.shape[-1]].abs().sum() > 0
    assert model.item_text_fusion.weight.grad[:, ids.shape[-1]:].abs().sum() > 0

    _, summed, _ = mini_model(mini_movielens, tmp_path, **overrides)
    assert summed.item_text_fusion is None
    assert torch.equal(summed.sequence_input_items(seq), summed.item_embedding(seq) + summed.item_text_part(seq))
    with pytest.raises(ValueError, match="collaborative_item_text_fusion='product' is invalid"):
        mini_model(mini_movielens, tmp_path, collaborative_item_text_fusion="product")


def test_learned_item_text_tokens_add_to_text_aware_items_in_input_and_scoring(mini_movielens, tmp_path):
    """``learned_item_text_tokens``: each text-aware item also adds the learned mean of its text's token vectors.
    They start at zero (the model starts as the one without them), a token's vector moves exactly the items whose
    text holds it, training reaches them, and a run with them trains, saves, reloads and tests."""
    overrides = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True,
                 "learned_item_text_tokens": True}
    _, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, **overrides)
    model.eval()
    bag = model.item_token_bag
    text_part = model.item_embedding.weight + model.item_text_projection(model.item_text_table)
    assert torch.equal(model.collaborative_items(), text_part)
    batch = next(iter(train_data))
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    users = (None, model.collaborative_user(seq, seq_len))
    scores = model.score(users)

    token = int(bag.token_ids[int(seq[0, 0]), 0])  # the first token of an item in the first row's history
    with torch.no_grad():
        bag.bag.weight[token] = torch.randn(bag.bag.embedding_dim, generator=torch.Generator().manual_seed(0))
    holders = (bag.token_ids == token).any(1).nonzero().flatten().tolist()
    assert (model.score(users) != scores).any(0).nonzero().flatten().tolist() == holders
    assert not torch.allclose(model.collaborative_user(seq, seq_len)[0], users[1][0])

    model.train()
    model.calculate_loss(batch).backward()
    assert bag.bag.weight.grad[1:].abs().sum() > 0

    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path, **overrides))
    assert list(result["test_result"]) == METRICS
    with pytest.raises(ValueError, match="collaborative_item_text=True"):
        mini_model(mini_movielens, tmp_path, learned_item_text_tokens=True)


def test_learned_item_text_tokens_words_pools_the_words_of_each_items_text(mini_movielens, tmp_path):
    """``learned_item_text_tokens: words``: the bag's units are the words of each item text (first
    ``max_item_text_tokens``), not the LLM tokenizer's tokens; any other string is refused by name."""
    overrides = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True,
                 "max_item_text_tokens": 4}
    _, by_words, _ = mini_model(mini_movielens, tmp_path, learned_item_text_tokens="words", **overrides)
    _, by_tokens, _ = mini_model(mini_movielens, tmp_path, learned_item_text_tokens=True, **overrides)
    texts = by_words.item_texts
    word_counts = torch.tensor([min(len((text or "").split()), 4) for text in texts])
    assert torch.equal((by_words.item_token_bag.token_ids > 0).sum(1), word_counts)
    assert by_words.item_token_bag.bag.num_embeddings == 1 + len({w for t in texts for w in (t or "").split()[:4]})
    assert by_tokens.item_token_bag.bag.num_embeddings != by_words.item_token_bag.bag.num_embeddings
    with pytest.raises(ValueError, match="learned_item_text_tokens='word'"):
        mini_model(mini_movielens, tmp_path, learned_item_text_tokens="word", **overrides)


def test_collaborative_initializer_range_initialises_the_branch_as_sasrec_and_nothing_else(mini_movielens, tmp_path):
    """``collaborative_initializer_range``: every Linear and Embedding of the collaborative branch (encoder, item
    and position embeddings, text projection) drawn from normal(0, range) with zero biases, as RecBole's SASRec
    initialises; the semantic branch keeps the weights it gets without the option. Off (~), the encoder keeps
    PyTorch's initialisation."""
    overrides = {"loss_type": "CE", "collaborative_item_text": True}
    torch.manual_seed(0)
    _, default, _ = mini_model(mini_movielens, tmp_path, **overrides)
    torch.manual_seed(0)
    _, model, _ = mini_model(mini_movielens, tmp_path, collaborative_initializer_range=0.05, **overrides)

    layers = [layer for part in model.collaborative_parts() for layer in part.modules()]
    weighted = [layer for layer in layers if isinstance(layer, (torch.nn.Linear, torch.nn.Embedding))]
    assert model.item_text_projection[1] in weighted and model.sequence_encoder.layer[0].feed_forward.dense_1 in layers
    for layer in weighted:
        weight = layer.weight.detach()
        assert abs(float(weight.std()) - 0.05) < 0.01 and abs(float(weight.mean())) < 0.01
        if isinstance(layer, torch.nn.Linear):
            assert not layer.bias.any()
    norms = [layer for layer in layers if isinstance(layer, torch.nn.LayerNorm)]
    assert norms and all(bool((n.weight == 1).all()) and not n.bias.any() for n in norms)

    # off: PyTorch's uniform(+-1/sqrt(fan_in)) for the encoder's 64-wide layers (std 0.072) and non-zero biases
    dense = default.sequence_encoder.layer[0].feed_forward.dense_1
    assert float(dense.weight.std()) > 0.06 and dense.bias.any()
    semantic = [name for name, _ in model.named_parameters() if name.split(".")[0] in
                ("prompt_encoder", "reasoning_encoder", "answer_encoder", "rec_head")]
    assert semantic
    for name in semantic:
        assert torch.equal(model.get_parameter(name), default.get_parameter(name)), name
    with pytest.raises(ValueError, match="collaborative_initializer_range=-1 is invalid"):
        mini_model(mini_movielens, tmp_path, collaborative_initializer_range=-1)


def test_item_text_in_scoring_by_popularity_learns_one_share_of_the_text_per_popularity_band(mini_movielens,
                                                                                           tmp_path):
    """``collaborative_item_text_in_scoring=by_popularity``: an item's scoring vector is its ID embedding plus a
    learned share of its text part, one share per popularity band of the item's training count, starting at 0 (ID
    scoring); a band's share moves exactly that band's items, by their text part; training reaches the shares, the
    text still enters the encoder's input, and a run trains, saves, reloads and tests."""
    overrides = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True,
                 "collaborative_item_text_in_scoring": "by_popularity", "train_batch_size": 64}
    _, model, (train_data, _, _) = mini_model(mini_movielens, tmp_path, **overrides)
    model.eval()
    bands = model.item_popularity_band
    assert torch.equal(bands, popularity_bands(training_counts(train_data._dataset)))
    assert len(set(bands.tolist())) > 2  # the slice spreads its items over several bands
    assert torch.equal(model.collaborative_items(), model.item_embedding.weight)

    band = int(bands[1:].mode().values)
    with torch.no_grad():
        model.item_text_score_share[band] = 0.5
    moved = model.collaborative_items() - model.item_embedding.weight
    changed = moved.abs().sum(1) > 0
    assert torch.equal(changed, bands == band)
    text = model.item_text_projection(model.item_text_table)
    assert torch.allclose(moved[changed], 0.5 * text[changed])

    batch = next(iter(train_data))
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    user = model.collaborative_user(seq, seq_len)
    model.item_text_table[int(seq[0, 0])] = torch.randn(model.item_text_table.shape[1],
                                                        generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(model.collaborative_user(seq, seq_len)[0], user[0])

    model.train()
    model.calculate_loss(batch).backward()
    assert model.item_text_score_share.grad[bands.unique()].abs().sum() > 0

    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path, **overrides))
    assert list(result["test_result"]) == METRICS
    with pytest.raises(ValueError, match="collaborative_item_text_in_scoring='sometimes' is invalid"):
        mini_model(mini_movielens, tmp_path, collaborative_item_text_in_scoring="sometimes")
