import math
import statistics

import pytest
import torch

from rporec_recbole.grpo import entropy_mask, group_advantages, grpo_loss

# group_advantages


def _loop_advantages(rewards, group_size, scale, eps=1e-4):
    """Straightforward per-group computation, written independently of the module."""
    advantages = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        mean = sum(group) / len(group)
        std = statistics.stdev(group)
        for reward in group:
            if std == 0:
                advantages.append(0.0)
            elif scale == "group":
                advantages.append((reward - mean) / (std + eps))
            else:
                advantages.append(reward - mean)
    return advantages


@pytest.mark.parametrize("scale", ["group", "none"])
def test_group_advantages_match_a_per_group_loop(scale):
    rewards = [0.3, 0.9, 0.1, 0.5, 1.0, 1.0, 0.2, 0.7]
    advantages = group_advantages(torch.tensor(rewards, dtype=torch.float64), 4, scale=scale)
    assert advantages.tolist() == pytest.approx(_loop_advantages(rewards, 4, scale), abs=1e-12)


def test_group_advantages_by_hand():
    advantages = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), 4)
    std = math.sqrt(5 / 3)  # unbiased std of 1, 2, 3, 4
    expected = [d / (std + 1e-4) for d in (-1.5, -0.5, 0.5, 1.5)]
    assert advantages.tolist() == pytest.approx(expected, abs=1e-6)
    assert group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), 4, scale="none").tolist() == [-1.5, -0.5, 0.5, 1.5]


def test_group_advantages_keep_the_reward_dtype():
    assert group_advantages(torch.tensor([1.0, 2.0]), 2).dtype == torch.float32
    assert group_advantages(torch.tensor([1.0, 2.0], dtype=torch.float64), 2).dtype == torch.float64


def test_zero_std_groups_get_exactly_zero_advantage():
    # in float64, three copies of 0.8444218515250481 do not average back to exactly that value
    same = 0.8444218515250481
    rewards = torch.tensor([same, same, same, 0.7, 0.7, 0.7, 0.0, 1.0, 0.5], dtype=torch.float64)
    advantages = group_advantages(rewards, 3)
    assert advantages[:6].tolist() == [0.0] * 6
    assert torch.isfinite(advantages).all()
    assert advantages[6:].tolist() == pytest.approx([-0.5 / (0.5 + 1e-4), 0.5 / (0.5 + 1e-4), 0.0], abs=1e-6)


def test_a_group_with_a_non_finite_reward_gets_zero_advantage_and_spares_the_others():
    rewards = torch.tensor([0.2, math.nan, 0.4, 0.0, 1.0, math.inf])
    advantages = group_advantages(rewards, 2)
    assert advantages[0].item() == 0.0 and advantages[1].item() == 0.0
    assert advantages[4].item() == 0.0 and advantages[5].item() == 0.0
    std = math.sqrt(0.2**2 + 0.2**2)  # unbiased std of 0.4, 0.0
    assert advantages[2:4].tolist() == pytest.approx([0.2 / (std + 1e-4), -0.2 / (std + 1e-4)], abs=1e-6)


@pytest.mark.parametrize(
    "count, group_size, scale",
    [(6, 4, "group"), (4, 1, "group"), (4, 2, "batch")],
)
def test_group_advantages_reject_bad_arguments(count, group_size, scale):
    with pytest.raises(ValueError):
        group_advantages(torch.arange(float(count)), group_size, scale=scale)


# entropy_mask

PAD_ENTROPY = 100.0  # higher than every valid entropy: padding must never be selected


def test_entropy_mask_keeps_the_top_fraction_of_valid_tokens():
    entropies = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, PAD_ENTROPY], [6.0, 7.0, 8.0, 9.0, 10.0, PAD_ENTROPY]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
    # threshold = 0.8 quantile of 1..10 = 1 + 0.8 * 9 = 8.2, so 9 and 10 are kept
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[1, 3:5] = True
    assert torch.equal(entropy_mask(entropies, valid, 0.2), expected)


def test_entropy_mask_threshold_is_shared_by_the_whole_batch():
    entropies = torch.tensor([[1.0, 1.5, 2.0], [5.0, 6.0, 7.0]])
    kept = entropy_mask(entropies, torch.ones(2, 3), 0.5)
    assert kept.tolist() == [[False, False, False], [True, True, True]]


def test_entropy_mask_quantile_one_keeps_every_valid_token_and_zero_keeps_the_maximum():
    entropies = torch.tensor([[0.5, 2.0, 0.1], [3.0, 0.2, PAD_ENTROPY]])
    valid = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert torch.equal(entropy_mask(entropies, valid, 1.0), valid.bool())
    assert entropy_mask(entropies, valid, 0.0).tolist() == [[False, False, False], [True, False, False]]


def test_entropy_mask_keeps_all_tied_tokens():
    kept = entropy_mask(torch.full((2, 3), 0.7), torch.ones(2, 3), 0.2)
    assert kept.all()


def test_entropy_mask_without_valid_tokens_keeps_nothing():
    kept = entropy_mask(torch.rand(2, 3), torch.zeros(2, 3), 0.2)
    assert kept.dtype == torch.bool and not kept.any()


def test_entropy_mask_rejects_a_quantile_outside_zero_one():
    with pytest.raises(ValueError):
        entropy_mask(torch.rand(1, 3), torch.ones(1, 3), 1.5)


# grpo_loss

LOGPS = [
    [-1.0, -0.6, -2.0, -0.3],
    [-0.4, -1.5, -0.9, -2.2],
    [-0.7, -0.2, -1.1, -0.5],
    [-1.3, -0.8, -0.6, -1.9],
]
# log(ratio) per token: exp(0.5) = 1.65 and exp(0.6) = 1.82 pass 1 + eps; exp(-0.5) and exp(-0.6) pass 1 - eps
LOG_RATIOS = [
    [0.5, -0.5, 0.1, 0.0],
    [0.3, -0.3, -0.5, 9.0],
    [-0.1, 0.25, -0.4, 0.0],
    [0.05, 0.6, -0.6, 0.22],
]
REF_MINUS_LOGPS = [
    [0.2, -0.1, 0.3, -0.4],
    [0.5, 0.0, -0.2, 0.1],
    [-0.3, 0.4, 0.1, 0.0],
    [0.1, -0.5, 0.25, 0.05],
]
ADVANTAGES = [1.2, -0.7, 0.0, 0.9]
COMPLETION_MASK = [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
ENTROPY_MASK = [[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]]
MAX_COMPLETION_LENGTH = 6


def _inputs():
    logps = torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True)
    old_logps = logps.detach() - torch.tensor(LOG_RATIOS, dtype=torch.float64)
    ref_logps = logps.detach() + torch.tensor(REF_MINUS_LOGPS, dtype=torch.float64)
    return dict(
        logps=logps,
        old_logps=old_logps,
        ref_logps=ref_logps,
        advantages=torch.tensor(ADVANTAGES, dtype=torch.float64),
        completion_mask=torch.tensor(COMPLETION_MASK),
    )


def _loop_loss(logps, old_logps, ref_logps, advantages, completion_mask, beta, epsilon_low, epsilon_high,
               loss_type, entropy_keep):
    """The loss built token by token from scalar tensors, so autograd also gives reference gradients."""
    rows = []
    for i in range(len(LOGPS)):
        row = []
        for t in range(len(LOGPS[0])):
            if not completion_mask[i][t]:
                continue
            ratio = torch.exp(logps[i, t] - old_logps[i][t])
            clipped = min(max(ratio, 1 - epsilon_low), 1 + epsilon_high)
            token_loss = -min(ratio * advantages[i], clipped * advantages[i])
            if entropy_keep is not None and not entropy_keep[i][t]:
                token_loss = token_loss * 0.0
            if ref_logps is not None and beta != 0:
                delta = ref_logps[i][t] - logps[i, t]
                token_loss = token_loss + beta * (torch.exp(delta) - delta - 1)
            row.append(token_loss)
        rows.append(row)
    if loss_type == "grpo":
        return sum(sum(row) / len(row) for row in rows) / len(rows)
    total = sum(sum(row) for row in rows)
    if loss_type == "dapo":
        return total / sum(len(row) for row in rows)
    return total / (len(rows) * MAX_COMPLETION_LENGTH)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("use_entropy_mask", [False, True])
@pytest.mark.parametrize("epsilon_high", [None, 0.28])
def test_grpo_loss_and_gradient_match_a_token_loop(loss_type, beta, use_entropy_mask, epsilon_high):
    inputs = _inputs()
    keep = torch.tensor(ENTROPY_MASK, dtype=torch.bool) if use_entropy_mask else None
    loss, _ = grpo_loss(
        **inputs, beta=beta, epsilon_high=epsilon_high, loss_type=loss_type,
        max_completion_length=MAX_COMPLETION_LENGTH, entropy_mask=keep,
    )
    (grad,) = torch.autograd.grad(loss, inputs["logps"])

    reference = _loop_loss(
        inputs["logps"], inputs["old_logps"].tolist(), inputs["ref_logps"].tolist(), ADVANTAGES,
        COMPLETION_MASK, beta, 0.2, 0.2 if epsilon_high is None else epsilon_high, loss_type,
        ENTROPY_MASK if use_entropy_mask else None,
    )
    (reference_grad,) = torch.autograd.grad(reference, inputs["logps"])
    assert loss.item() == pytest.approx(reference.item(), abs=1e-12)
    assert torch.allclose(grad, reference_grad, atol=1e-12)


def test_the_loss_types_aggregate_differently():
    losses = {
        loss_type: grpo_loss(**_inputs(), beta=0.04, loss_type=loss_type, max_completion_length=6)[0].item()
        for loss_type in ("grpo", "dapo", "dr_grpo")
    }
    assert len(set(losses.values())) == 3


def test_the_test_data_clips_on_both_sides():
    _, metrics = grpo_loss(**_inputs(), beta=0.0)
    assert metrics["clip_low"] > 0 and metrics["clip_high"] > 0


def test_metrics_match_a_token_loop():
    inputs = _inputs()
    _, metrics = grpo_loss(**inputs, beta=0.0, epsilon_high=0.28)
    ratios, kls, low, high = [], [], 0, 0
    for i, row in enumerate(COMPLETION_MASK):
        for t, valid in enumerate(row):
            if not valid:
                continue
            ratio = math.exp(LOG_RATIOS[i][t])
            delta = REF_MINUS_LOGPS[i][t]
            ratios.append(ratio)
            kls.append(math.exp(delta) - delta - 1)
            low += ratio < 0.8 and ADVANTAGES[i] < 0
            high += ratio > 1.28 and ADVANTAGES[i] > 0
    count = len(ratios)
    assert metrics["ratio_mean"] == pytest.approx(sum(ratios) / count)
    assert metrics["kl"] == pytest.approx(sum(kls) / count)
    assert metrics["clip_low"] == pytest.approx(low / count)
    assert metrics["clip_high"] == pytest.approx(high / count)
    assert metrics["clip_region"] == pytest.approx((low + high) / count)
    # low: (1, 1), (1, 2); high: (0, 0), (3, 1); exp(0.22) at (3, 3) stays below 1.28
    assert (low, high) == (2, 2)
    assert all(isinstance(value, float) for value in metrics.values())


def test_kl_is_left_out_of_the_loss_without_reference_or_with_zero_beta():
    inputs = _inputs()
    without_kl, _ = grpo_loss(**inputs, beta=0.0)
    no_reference, metrics = grpo_loss(**{**inputs, "ref_logps": None}, beta=0.5)
    with_kl, _ = grpo_loss(**inputs, beta=0.5)
    assert no_reference.item() == pytest.approx(without_kl.item(), abs=1e-15)
    assert "kl" not in metrics
    assert with_kl.item() > without_kl.item()


def test_on_policy_loss_is_minus_the_mean_advantage_with_per_length_gradients():
    logps = torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor(COMPLETION_MASK)
    loss, metrics = grpo_loss(logps, None, None, torch.tensor(ADVANTAGES, dtype=torch.float64), mask, beta=0.0)
    loss.backward()
    assert loss.item() == pytest.approx(-sum(ADVANTAGES) / 4)
    assert metrics["ratio_mean"] == 1.0 and metrics["clip_region"] == 0.0
    lengths = [sum(row) for row in COMPLETION_MASK]
    expected = [
        [-ADVANTAGES[i] * valid / lengths[i] / 4 for valid in row] for i, row in enumerate(COMPLETION_MASK)
    ]
    assert torch.allclose(logps.grad, torch.tensor(expected, dtype=torch.float64))


def test_gradient_flows_only_through_logps():
    inputs = _inputs()
    for name in ("old_logps", "ref_logps", "advantages"):
        inputs[name] = inputs[name].clone().requires_grad_(True)
    loss, _ = grpo_loss(**inputs, beta=0.04)
    loss.backward()
    assert inputs["logps"].grad is not None and inputs["logps"].grad.abs().sum() > 0
    for name in ("old_logps", "ref_logps", "advantages"):
        assert inputs[name].grad is None, name


@pytest.mark.parametrize("garbage", [math.nan, math.inf, -math.inf, 123.0])
def test_padded_tokens_change_neither_loss_nor_gradient(garbage):
    clean = _inputs()
    clean_loss, _ = grpo_loss(**clean, beta=0.04)
    clean_loss.backward()

    dirty = _inputs()
    padded = ~dirty["completion_mask"].bool()
    for name in ("old_logps", "ref_logps"):
        dirty[name] = dirty[name].masked_fill(padded, garbage)
    dirty["logps"] = dirty["logps"].detach().masked_fill(padded, garbage).requires_grad_(True)
    dirty_loss, metrics = grpo_loss(**dirty, beta=0.04)
    dirty_loss.backward()

    assert dirty_loss.item() == pytest.approx(clean_loss.item(), abs=1e-15)
    assert all(math.isfinite(value) for value in metrics.values())
    assert torch.equal(dirty["logps"].grad[padded], torch.zeros(int(padded.sum()), dtype=torch.float64))
    assert torch.allclose(dirty["logps"].grad, clean["logps"].grad)


def test_entropy_mask_silences_the_policy_gradient_but_not_the_kl():
    keep = torch.tensor(ENTROPY_MASK, dtype=torch.bool)
    dropped = torch.tensor(COMPLETION_MASK).bool() & ~keep
    without_kl = _inputs()
    grpo_loss(**without_kl, beta=0.0, entropy_mask=keep)[0].backward()
    assert (without_kl["logps"].grad[dropped] == 0).all()
    assert (without_kl["logps"].grad[keep & (torch.tensor(ADVANTAGES) != 0).unsqueeze(1)] != 0).any()

    with_kl = _inputs()
    grpo_loss(**with_kl, beta=0.04, entropy_mask=keep)[0].backward()
    assert (with_kl["logps"].grad[dropped] != 0).all()


def test_zero_std_groups_carry_no_policy_gradient():
    inputs = _inputs()
    inputs["advantages"] = group_advantages(torch.tensor([0.9, 0.1, 0.5, 0.5], dtype=torch.float64), 2)
    grpo_loss(**inputs, beta=0.0)[0].backward()
    grad = inputs["logps"].grad
    assert (grad[2:] == 0).all()
    assert (grad[0] != 0).any() and (grad[1][:3] != 0).any()


def test_grpo_loss_rejects_unknown_loss_type_and_dr_grpo_without_length():
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(**_inputs(), beta=0.0, loss_type="bnpo")
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(**_inputs(), beta=0.0, loss_type="dr_grpo")
