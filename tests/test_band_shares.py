"""Each popularity band's text share chosen on valid (``item_text_share_on_valid``): the rank math, the search,
and a run that saves the chosen shares into the checkpoint its test evaluation reloads."""
import math

import pytest
import torch

from band_share_memory import StandInScorer, StandInValidData  # benchmarks/, on the path through conftest
from conftest import mini_config, mini_model
from rporec_recbole import run_recbole_rporec
from rporec_recbole.band_shares import ValidScores, choose_band_shares, metric_from_ranks
from rporec_recbole.checkpoint import load_checkpoint


def test_metric_from_ranks_scores_a_single_target_per_row():
    ranks = torch.tensor([0, 1, 9, 10])
    assert metric_from_ranks("ndcg@10", ranks) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4)
    assert metric_from_ranks("Hit@10", ranks) == metric_from_ranks("recall@10", ranks) == 0.75
    assert metric_from_ranks("mrr@2", ranks) == pytest.approx((1 + 0.5) / 4)
    with pytest.raises(ValueError, match="not precision@10"):
        metric_from_ranks("precision@10", ranks)


def test_ranks_count_the_items_above_the_target_under_per_item_shares_and_never_the_padding_item():
    base = torch.tensor([[9.0, 1.0, 2.0, 3.0], [9.0, 3.0, 2.0, 1.0]])
    text = torch.tensor([[5.0, 2.0, 0.0, 0.0], [5.0, 0.0, 0.0, 1.0]])
    scores = ValidScores(base, text, targets=torch.tensor([1, 3]))
    assert scores.ranks(torch.zeros(4)).tolist() == [2, 2]  # item 0's score 9 does not count
    # share 1 for item 1 only: row 0's target scores 3, level with item 3 (a tie counts in the target's favour)
    assert scores.ranks(torch.tensor([1.0, 1.0, 0.0, 0.0])).tolist() == [0, 2]
    assert scores.ranks(torch.tensor([0.0, 0.0, 0.0, 3.0]), rows=1).tolist() == [2, 0]


def test_choose_band_shares_raises_a_band_whose_text_ranks_its_targets_and_leaves_a_misleading_band_alone():
    """Band 1's targets win with more text; band 2's text favours wrong items, so its share stays; the result is
    never below the learned start on valid."""
    generator = torch.Generator().manual_seed(0)
    rows, items = 200, 30
    bands = torch.tensor([0] + [1] * 10 + [2] * 19)
    base = torch.randn(rows, items, generator=generator)
    text = torch.randn(rows, items, generator=generator).abs()
    targets = torch.randint(1, 11, (rows,), generator=generator)  # every target is in band 1
    text[torch.arange(rows), targets] += 3.0  # band 1's text points at the target
    learned = torch.tensor([0.0, 0.1, 0.2])
    shares, before, after = choose_band_shares(ValidScores(base, text, targets), bands, learned, "ndcg@10")
    assert shares[1] > learned[1]
    assert shares[2] <= learned[2]  # band 2's text only lifts wrong items
    assert after > before
    assert before == pytest.approx(metric_from_ranks("ndcg@10", ValidScores(base, text, targets).ranks(
        learned[bands])))
    # the steps scale with the largest starting share, so a second search can move on, never down
    _, start, end = choose_band_shares(ValidScores(base, text, targets), bands, shares, "ndcg@10")
    assert start == pytest.approx(after) and end >= start


class PeakedScores(ValidScores):
    """Ranks that put every row's target first only while item 1's share is within 0.02 of 0.25, else at rank 20:
    the narrow peak of Beauty's valid surface (session 34)."""

    def __init__(self):
        self.targets = torch.zeros(4, dtype=torch.long)

    def ranks(self, item_shares):
        return torch.full((4,), 0 if abs(item_shares[1].item() - 0.25) < 0.02 else 20)


def test_choose_band_shares_finds_a_peak_narrower_than_half_the_largest_share():
    """Regression: the first search tried 0, 0.5, 1, 1.5, ... times the largest learned share (0.2 here: 0.2, 0.3),
    both off this peak, so it kept the learned shares; steps from the current share reach 0.24."""
    bands = torch.tensor([0, 1, 2])
    shares, before, after = choose_band_shares(PeakedScores(), bands, torch.tensor([0.0, 0.2, 0.1]), "ndcg@10")
    assert before == 0.0 and after == 1.0
    assert abs(shares[1].item() - 0.25) < 0.02 and shares[2].item() == pytest.approx(0.1)


RUN_OVERRIDES = {"loss_type": "CE", "use_semantic": False, "collaborative_item_text": True,
                 "collaborative_item_text_in_scoring": "by_popularity", "item_text_share_on_valid": True, "epochs": 2}


def test_run_searches_the_shares_on_valid_and_reports_them(mini_movielens, tmp_path):
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path,
                                                                            **RUN_OVERRIDES))
    chosen = result["band_shares"]
    before, after = chosen["valid ndcg@10"]
    assert after >= before
    assert chosen["valid before"]["ndcg@10"] == pytest.approx(before, abs=5e-5)  # stage 1's result, kept whole
    assert result["best_valid_result"]["ndcg@10"] == pytest.approx(after, abs=5e-5)  # RecBole prints 4 decimals
    assert len(chosen["learned"]) == len(chosen["chosen"]) == len(load_checkpoint(result["checkpoint"])[0][
        "item_text_score_share"])


@pytest.mark.parametrize("in_scoring", ["by_popularity", False])
def test_run_tests_the_model_that_holds_the_chosen_shares(mini_movielens, tmp_path, monkeypatch, in_scoring):
    """Shares the search would not find on 40 users (the learned ones + 1) reach the saved checkpoint that the test
    evaluation reloads, and RecBole's valid evaluation of them matches what the search measured. With text in the
    encoder's input only, the shares trained are all 0."""
    def shifted_search(valid_scores, item_bands, learned_shares, metric):
        shares = learned_shares + 1.0
        return (shares, valid_scores.metric(metric, learned_shares, item_bands),
                valid_scores.metric(metric, shares, item_bands))

    monkeypatch.setattr("rporec_recbole.trainer.choose_band_shares", shifted_search)
    overrides = dict(RUN_OVERRIDES, collaborative_item_text_in_scoring=in_scoring)
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path, **overrides))
    chosen = result["band_shares"]
    assert (not any(chosen["learned"])) == (in_scoring is False)
    assert chosen["chosen"] == pytest.approx([share + 1.0 for share in chosen["learned"]])
    assert result["best_valid_result"]["ndcg@10"] == pytest.approx(chosen["valid ndcg@10"][1], abs=5e-5)
    saved = load_checkpoint(result["checkpoint"])[0]["item_text_score_share"]
    assert saved.tolist() == pytest.approx(chosen["chosen"])


def test_run_without_saving_chooses_the_shares_and_writes_no_checkpoint(mini_movielens, tmp_path):
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path,
                                                                            **RUN_OVERRIDES), saved=False)
    assert result["checkpoint"] is None and result["band_shares"]["chosen"]
    assert not list((tmp_path / "saved").rglob("model.safetensors"))


@pytest.mark.parametrize("collaborative_item_text, in_scoring", [(True, True), (False, "by_popularity")])
def test_item_text_share_on_valid_needs_text_aware_items_not_all_text_in_scoring(
        mini_movielens, tmp_path, collaborative_item_text, in_scoring):
    with pytest.raises(ValueError, match="collaborative_item_text_in_scoring=by_popularity"):
        mini_model(mini_movielens, tmp_path, collaborative_item_text=collaborative_item_text,
                   collaborative_item_text_in_scoring=in_scoring, item_text_share_on_valid=True)


def test_item_text_share_on_valid_needs_full_ranking_on_valid(mini_movielens, tmp_path):
    # a sampled valid loader yields each user's row with its negatives, which the search cannot rank over all items
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": {"valid": "uni10", "test": "full"}}
    with pytest.raises(ValueError, match="mode valid: full"):
        mini_model(mini_movielens, tmp_path, **RUN_OVERRIDES, eval_args=eval_args)


def test_text_in_input_only_trains_with_id_scoring_and_frozen_zero_shares(mini_movielens, tmp_path):
    """With ``collaborative_item_text_in_scoring=False`` the search starts from shares that training cannot move:
    every item scores by its ID embedding exactly, as without the search, and a training step leaves the shares 0."""
    _, model, splits = mini_model(mini_movielens, tmp_path, loss_type="CE", use_semantic=False,
                                  collaborative_item_text=True, collaborative_item_text_in_scoring=False,
                                  item_text_share_on_valid=True)
    assert not model.item_text_score_share.requires_grad
    assert torch.equal(model.collaborative_items(), model.item_embedding.weight)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.calculate_loss(next(iter(splits[0]))).backward()
    optimizer.step()
    assert model.item_text_score_share.grad is None and not model.item_text_score_share.any()


def test_collect_keeps_both_score_parts_of_every_valid_row_in_loader_order():
    # the parts are written into tables allocated once (benchmarks/band_share_memory.py), batch by batch
    model = StandInScorer(n_items=30, hidden=8)
    data = StandInValidData(rows=11, n_items=30, batch=4)
    scores = ValidScores.collect(model, data)
    batches = list(data)
    users = [model(batch["item_seq"], batch["item_seq_len"]) for batch, *_ in batches]
    share = model.item_text_score_share[0].item()
    text = torch.cat([u[1] @ model.text.T for u in users])
    base = torch.cat([u[0] @ model.item_embedding.weight.T for u in users])
    assert torch.allclose(scores.text[:, 1:], text[:, 1:], atol=1e-5)
    assert torch.allclose(scores.base[:, 1:], base[:, 1:], atol=1e-5)  # scored with every share 0
    assert torch.equal(scores.targets, torch.cat([positive_i for *_, positive_i in batches]))
    assert model.item_text_score_share[0].item() == share  # the model's shares are left as they were


@pytest.mark.parametrize("sample_size", [10, 12])
def test_collect_refuses_a_loader_whose_rows_differ_from_its_sample_size(sample_size):
    with pytest.raises((ValueError, RuntimeError)):
        ValidScores.collect(StandInScorer(n_items=30, hidden=8), StandInValidData(11, 30, 4, sample_size=sample_size))
