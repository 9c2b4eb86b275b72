import math

import numpy as np
import pytest
import torch

from rporec_recbole.per_user import load_per_user, paired_test, per_user_ndcg, save_per_user, target_rank_metrics


def _evaluation(user_ids, hit_ranks, max_k=20):
    """rec.topk rows for users with one positive each, hit at ``rank`` (1-based) or missed (0)."""
    topk = np.zeros((len(user_ids), max_k + 1), dtype=np.int32)
    for row, rank in enumerate(hit_ranks):
        if rank:
            topk[row, rank - 1] = 1
    topk[:, -1] = 1
    return {"user_id": np.array(user_ids), "topk": topk}


def test_per_user_ndcg_is_one_over_log2_of_rank_plus_one_within_k():
    ndcg = per_user_ndcg(_evaluation([7, 8, 9, 10], [1, 3, 11, 0]), k=10)
    assert ndcg == pytest.approx({7: 1.0, 8: 1 / math.log2(4), 9: 0.0, 10: 0.0})


def test_per_user_ndcg_with_several_positives_uses_recbole_normalisation():
    evaluation = _evaluation([1], [2])
    evaluation["topk"][0, -1] = 2  # two positives, one found at rank 2: DCG 1/log2(3) over IDCG 1 + 1/log2(3)
    assert per_user_ndcg(evaluation, k=10)[1] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_target_rank_metrics_agree_with_recbole_ndcg_on_the_same_ranks():
    # targets ranked 1, 3 and 12 (ties count for the target), one masked out of the ranking with -inf
    scores = torch.tensor([[0.9, 0.5, 0.1] + [0.0] * 11, [0.9, 0.8, 0.7, 0.7] + [0.0] * 10,
                           [1.0] * 11 + [0.5, 0.0, 0.0], [-torch.inf] + [1.0] * 13])
    ndcg, recall = target_rank_metrics(scores, torch.tensor([0, 2, 11, 0]), k=10)
    recbole = per_user_ndcg(_evaluation([1, 2, 3, 4], [1, 3, 0, 0]), k=10)
    assert ndcg == pytest.approx(sum(recbole.values()) / 4)
    assert recall == pytest.approx(2 / 4)


def test_save_and_load_per_user_round_trip(tmp_path):
    evaluations = {"stage1": _evaluation([1, 2], [1, 0]), "stage2": _evaluation([1, 2], [0, 5])}
    path = tmp_path / "row.users.npz"
    save_per_user(str(path), evaluations)
    loaded = load_per_user(str(path))
    assert loaded.keys() == evaluations.keys()
    for name in evaluations:
        for field in ("user_id", "topk"):
            np.testing.assert_array_equal(loaded[name][field], evaluations[name][field])


def test_paired_test_pairs_users_and_separates_a_real_difference_from_noise():
    rng = np.random.default_rng(0)
    base = rng.random(500)
    a = dict(enumerate(base + 0.05))
    b = dict(enumerate(base + rng.normal(0, 0.01, 500)))
    users, mean_a, mean_b, p_value = paired_test(a, b)
    assert users == 500 and mean_a - mean_b == pytest.approx(0.05, abs=0.002) and p_value < 1e-6
    shuffled = dict(zip(reversed(range(500)), base[::-1]))  # same users, other insertion order: same pairing
    assert paired_test(dict(enumerate(base)), shuffled) == (500, pytest.approx(base.mean()),
                                                             pytest.approx(base.mean()), 1.0)
    noise = dict(enumerate(base + rng.normal(0, 0.01, 500)))
    assert paired_test(dict(enumerate(base)), noise)[3] > 0.01
    assert paired_test({1: 0.5, 2: 0.2}, {2: 0.1, 3: 0.9})[0] == 1  # only shared users count
