"""The same-target contrastive term: its sampler, its InfoNCE math, and its place in RPORec's stage-1 loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import mini_model
from rporec_recbole.contrastive import SameTargetSampler, same_target_info_nce
from rporec_recbole.validation import ConfigValueError


def test_info_nce_by_hand_with_distinct_targets():
    """Two samples, distinct targets: row 0's candidates are rows 1-3 (itself excluded), its positive row 2."""
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    partners = torch.tensor([[0.5, 0.5], [0.0, 2.0]])
    loss = same_target_info_nce(anchors, partners, torch.tensor([3, 4]), temperature=0.5)
    vectors = torch.cat([anchors, partners])
    similarity = vectors @ vectors.T / 0.5
    expected = 0
    for row, positive in enumerate([2, 3, 0, 1]):
        others = [j for j in range(4) if j != row]
        expected += -similarity[row, positive] + torch.logsumexp(similarity[row, others], 0)
    assert torch.allclose(loss, expected / 4)


def test_rows_sharing_a_target_are_not_negatives():
    """Rows 0 and 1 share a target: each is left out of the other's negatives, so the loss equals the loss of the
    same vectors where row 1's entries in row 0's softmax (and the other way round) are removed by hand."""
    torch.manual_seed(0)
    anchors, partners = torch.randn(3, 4), torch.randn(3, 4)
    shared = same_target_info_nce(anchors, partners, torch.tensor([7, 7, 9]), temperature=1.0)
    distinct = same_target_info_nce(anchors, partners, torch.tensor([7, 8, 9]), temperature=1.0)
    vectors = torch.cat([anchors, partners])
    similarity = vectors @ vectors.T
    group = {0: {0, 1, 3, 4}, 1: {0, 1, 3, 4}, 2: {2, 5}}  # rows of target 7 (and their partners), of target 9
    expected = 0
    for row in range(6):
        positive = (row + 3) % 6
        kept = [j for j in range(6) if j == positive or j not in group[row % 3]]
        expected += -similarity[row, positive] + torch.logsumexp(similarity[row, kept], 0)
    assert torch.allclose(shared, expected / 6)
    assert not torch.allclose(shared, distinct)


def test_a_batch_of_one_target_has_no_negatives_and_no_loss():
    anchors, partners = torch.randn(4, 3), torch.randn(4, 3)
    assert same_target_info_nce(anchors, partners, torch.full((4,), 5), 1.0).item() == 0


def test_sampler_draws_training_samples_of_the_same_target_and_covers_them():
    item_seq = torch.arange(12).view(6, 2)
    lengths = torch.tensor([1, 2, 1, 2, 1, 2])
    targets = torch.tensor([5, 3, 5, 5, 3, 1])
    sampler = SameTargetSampler(item_seq, lengths, targets, n_items=7)
    torch.manual_seed(0)
    asked = torch.tensor([5] * 300 + [3] * 200 + [1] * 10)
    drawn, drawn_lengths = sampler.sample(asked)
    rows = [int(torch.nonzero((item_seq == seq).all(1))[0]) for seq in drawn]
    assert all(int(targets[row]) == int(target) for row, target in zip(rows, asked))
    assert (drawn_lengths == lengths[rows]).all()
    counts = torch.bincount(torch.tensor(rows[:300]), minlength=6)
    assert set(counts.nonzero().flatten().tolist()) == {0, 2, 3}  # every row of target 5, about a third each
    assert counts.max() - counts[counts > 0].min() < 60
    with pytest.raises(ValueError, match="no training sample"):
        sampler.sample(torch.tensor([2]))


def test_sampler_tables_move_with_the_model_and_are_not_saved():
    sampler = SameTargetSampler(torch.ones(3, 2, dtype=torch.long), torch.ones(3, dtype=torch.long),
                                torch.tensor([1, 1, 2]), n_items=3)
    assert sampler.state_dict() == {}
    assert {name for name, _ in sampler.named_buffers()} == {"item_seq", "item_seq_len", "group_start", "group_size"}


def _model_and_batch(mini_movielens, tmp_path, **overrides):
    settings = {"loss_type": "CE", "use_semantic": False, "train_batch_size": 64, **overrides}
    _, model, splits = mini_model(mini_movielens, tmp_path, **settings)
    return model, next(iter(splits[0])), splits


def test_stage1_loss_adds_the_weighted_term_from_training_partners(mini_movielens, tmp_path):
    model, batch, splits = _model_and_batch(mini_movielens, tmp_path, contrastive_weight=0.5,
                                            contrastive_temperature=0.7)
    train_data = splits[0]
    # partners are training samples (the model is built on the training split), never valid or test ones: each
    # item's group holds as many rows as it is a training target, fewer than it is a target in all splits together
    train_targets = train_data._dataset.inter_feat[model.ITEM_ID]
    assert (model.same_target.group_size == torch.bincount(train_targets, minlength=model.n_items)).all()
    all_targets = torch.cat([split._dataset.inter_feat[model.ITEM_ID] for split in splits])
    assert model.same_target.group_size.sum() < len(all_targets)
    assert (model.same_target.group_size <= torch.bincount(all_targets, minlength=model.n_items)).all()
    model.eval()  # no dropout: the partner vectors can be recomputed exactly
    seq, seq_len, targets = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.POS_ITEM_ID]
    torch.manual_seed(3)
    loss = model.calculate_loss(batch)
    torch.manual_seed(3)
    partners = model.collaborative_user(*model.same_target.sample(targets))
    users = model(seq, seq_len)
    cross_entropy = F.cross_entropy(model.score(users), targets)
    term = same_target_info_nce(users[1], partners, targets, 0.7)
    assert term > 0
    assert torch.allclose(loss, cross_entropy + 0.5 * term, atol=1e-5)


def test_contrastive_term_is_off_by_default_and_trains_when_on(mini_movielens, tmp_path):
    model, batch, _ = _model_and_batch(mini_movielens, tmp_path)
    assert model.contrastive_weight == 0 and not hasattr(model, "same_target")
    model, batch, _ = _model_and_batch(mini_movielens, tmp_path, contrastive_weight=0.1)
    model.train()
    assert math.isfinite(model.calculate_loss(batch).item())
    u_col = model(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])[1]
    model.contrastive_loss(u_col, batch[model.POS_ITEM_ID]).backward()  # the term alone reaches the encoder
    assert model.sequence_encoder.layer[0].multi_head_attention.query.weight.grad.abs().sum() > 0


def test_sampled_softmax_loss_adds_the_term_for_each_sample_once(mini_movielens, tmp_path):
    """With the paper's loss RecBole tiles each batch once per negative: the term pairs the B distinct samples."""
    model, batch, _ = _model_and_batch(mini_movielens, tmp_path, loss_type="sampled_softmax",
                                       train_batch_size=8 * 49, contrastive_weight=0.3)
    model.eval()
    torch.manual_seed(5)
    loss = model.calculate_loss(batch)
    model.contrastive_weight = 0
    without = model.calculate_loss(batch)
    model.contrastive_weight = 0.3
    torch.manual_seed(5)
    targets = batch[model.POS_ITEM_ID][:8]
    term = model.contrastive_loss(model(batch[model.ITEM_SEQ][:8], batch[model.ITEM_SEQ_LEN][:8])[1], targets)
    assert term > 0
    assert torch.allclose(loss, without + term, atol=1e-5)


def test_contrastive_settings_are_checked(mini_movielens, tmp_path):
    with pytest.raises(ConfigValueError, match="contrastive_weight"):
        _model_and_batch(mini_movielens, tmp_path, contrastive_weight=-1)
    with pytest.raises(ConfigValueError, match="contrastive_temperature"):
        _model_and_batch(mini_movielens, tmp_path, contrastive_weight=0.1, contrastive_temperature=0)
    with pytest.raises(ValueError, match="use_collaborative"):
        _model_and_batch(mini_movielens, tmp_path, contrastive_weight=0.1, use_semantic=True, use_reasoning=False,
                         use_collaborative=False)
