"""Per-user test results, and paired significance tests between two models on the same test users.

RecBole's evaluator reports means only. A paired test needs each test user's result: ``PerUserRecorder`` hooks a
trainer while it evaluates and keeps the user id of every scored row and the top-k hit matrix RecBole computes its
metrics from (``rec.topk``: one 0/1 column per rank, then the user's number of positives). Per-user NDCG@k is
RecBole's own NDCG metric on that matrix, so its mean is the reported NDCG@k.
"""
import numpy as np
import torch
from recbole.evaluator.metrics import NDCG
from scipy import stats

from rporec_recbole.compat import numpy_aliases


class PerUserRecorder:
    """Hooks a RecBole trainer's evaluation; ``evaluations`` gets one entry per ``evaluate`` call after it.

    Each entry is ``{"user_id": (n,) int array, "topk": (n, max_k + 1) int array}`` in RecBole's ``rec.topk``
    layout. Install it right before the evaluation to keep (valid evaluations during training would pile up).
    """

    def __init__(self, trainer):
        self.evaluations = []
        self._users = []
        uid_field = trainer.config["USER_ID_FIELD"]
        collect, evaluate = trainer.eval_collector.eval_batch_collect, trainer.evaluator.evaluate

        def collect_with_users(scores, interaction, positive_u, positive_i):
            self._users.append(interaction[uid_field].detach().cpu())
            return collect(scores, interaction, positive_u, positive_i)

        def evaluate_and_keep(struct):
            users, self._users = torch.cat(self._users), []
            if "rec.topk" in struct:
                topk = struct.get("rec.topk")
                assert len(topk) == len(users), "one rec.topk row per scored interaction row"
                self.evaluations.append({"user_id": users.numpy().astype(np.int64), "topk": topk.numpy()})
            return evaluate(struct)

        trainer.eval_collector.eval_batch_collect = collect_with_users
        trainer.evaluator.evaluate = evaluate_and_keep


def save_per_user(path, evaluations):
    """``{name: evaluation}`` -> one compressed npz (``<name>/user_id``, ``<name>/topk``)."""
    arrays = {f"{name}/{field}": value for name, evaluation in evaluations.items()
              for field, value in evaluation.items()}
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a name without it
        np.savez_compressed(handle, **arrays)


def load_per_user(path):
    """The ``{name: {"user_id", "topk"}}`` that ``save_per_user`` wrote."""
    evaluations = {}
    with np.load(path) as data:
        for key in data.files:
            name, field = key.rsplit("/", 1)
            evaluations.setdefault(name, {})[field] = data[key]
    return evaluations


def per_user_ndcg(evaluation, k):
    """``{user id: NDCG@k}`` of one evaluation, by RecBole's NDCG metric."""
    numpy_aliases()  # RecBole's metric uses np.float
    topk = evaluation["topk"]
    hits, positives = topk[:, :-1].astype(bool), topk[:, -1]
    values = NDCG({"topk": [k], "metric_decimal_place": 4}).metric_info(hits, positives)[:, k - 1]
    return dict(zip(evaluation["user_id"].tolist(), values.tolist()))


def target_rank_metrics(scores, targets, k=10):
    """Mean ``(NDCG@k, Recall@k)`` of each row's target in a full ranking of ``scores`` (B, n_items): its rank is 1 +
    the items scored strictly above it. Items the caller masks get -inf scores first."""
    rank = (scores > scores.gather(1, targets[:, None])).sum(dim=1) + 1
    hit = rank <= k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 1), 0.0).mean()
    return float(ndcg), float(hit.double().mean())


def paired_test(ndcg_a, ndcg_b):
    """Paired t-test over the users both ``{user: value}`` dicts hold: (users, mean a, mean b, p-value)."""
    users = sorted(ndcg_a.keys() & ndcg_b.keys())
    a = np.array([ndcg_a[u] for u in users])
    b = np.array([ndcg_b[u] for u in users])
    p_value = float(stats.ttest_rel(a, b).pvalue) if len(users) > 1 and np.any(a != b) else 1.0
    return len(users), float(a.mean()), float(b.mean()), p_value
