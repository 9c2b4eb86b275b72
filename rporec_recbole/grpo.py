"""GRPO math for stage 2: group-relative advantages, the top-entropy token mask and the clipped loss.

Follows TRL's GRPOTrainer (the authors trained with it): completions come in groups of ``group_size`` per
prompt, laid out consecutively (prompt 0's G completions, then prompt 1's, ...).

Decisions:
- A group whose rewards are all equal has no signal: its advantages are exactly 0 (TRL gets
  0 / (0 + eps) only up to rounding). A group holding a non-finite reward also gets 0 advantages, so
  it carries no policy gradient while the rest of the batch still trains.
- ``entropy_mask`` keeps the top ``quantile`` fraction of the valid tokens of the whole batch by entropy,
  as TRL's ``top_entropy_quantile`` (threshold = the (1 - quantile) quantile, linear interpolation,
  kept when >= threshold). Across processes, `GRPOTrainer.global_entropy_mask` gathers the entropies first, as TRL does.
- The entropy mask multiplies the policy-gradient term only; the KL term still covers every valid token,
  as in TRL.
- Positions outside ``completion_mask`` are replaced by zeros before any arithmetic, so padding that holds
  NaN or inf log-probabilities changes neither the loss nor the gradient.
"""
import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def group_advantages(rewards, group_size, scale="group", eps=1e-4):
    """Advantage of each completion: reward minus its group's mean, divided by the group's std.

    ``rewards`` is (B*G,). ``scale="group"`` divides by (unbiased std + eps) as TRL does; ``scale="none"``
    keeps the centred reward (Dr. GRPO).
    """
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 to compare completions, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.detach().reshape(-1, group_size).double()
    usable = torch.isfinite(grouped).all(dim=1, keepdim=True)
    grouped = torch.where(usable, grouped, 0.0)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    varied = grouped.amax(dim=1, keepdim=True) > grouped.amin(dim=1, keepdim=True)
    advantages = torch.where(usable & varied, advantages, 0.0)
    return advantages.reshape(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def entropy_mask(entropies, completion_mask, quantile):
    """Boolean mask of the valid tokens whose entropy is among the top ``quantile`` fraction of the batch.

    ``quantile=0.2`` keeps the 20% highest-entropy tokens, ``1.0`` keeps every valid token.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    valid = completion_mask.bool()
    valid_entropies = entropies.detach()[valid].float()
    if valid_entropies.numel() == 0:
        return torch.zeros_like(valid)
    threshold = torch.quantile(valid_entropies, 1.0 - quantile)
    return valid & (entropies.detach() >= threshold)


def _k3_kl(logps, ref_logps):
    """Per-token k3 estimator of KL(policy || reference): exp(d) - d - 1 with d = ref - policy, always >= 0."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def _masked_mean(values, mask):
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _aggregate(per_token_loss, mask, loss_type, max_completion_length):
    """Reduce the (B, T) per-token loss to a scalar the way ``loss_type`` names."""
    if loss_type == "grpo":
        per_sequence = (per_token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.mean()
    if loss_type == "dapo":
        return _masked_mean(per_token_loss, mask)
    if max_completion_length is None:
        raise ValueError("loss_type='dr_grpo' needs max_completion_length (a constant normaliser)")
    return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)


def grpo_loss(
    logps,
    old_logps,
    ref_logps,
    advantages,
    completion_mask,
    beta,
    epsilon_low=0.2,
    epsilon_high=None,
    loss_type="grpo",
    max_completion_length=None,
    entropy_mask=None,
):
    """Clipped GRPO loss and its metrics.

    Shapes: ``logps``, ``old_logps``, ``ref_logps``, ``completion_mask`` and ``entropy_mask`` are (B, T);
    ``advantages`` is (B,). Only ``logps`` carries gradient. ``old_logps=None`` means on-policy (the ratio
    is 1 in value but still differentiable); ``ref_logps=None`` or ``beta == 0`` drops the KL term from the
    loss, though the KL is still reported when ``ref_logps`` is given.

    Returns ``(loss, metrics)`` with python floats ``kl`` (when ``ref_logps`` is given), ``ratio_mean``,
    ``clip_low``, ``clip_high`` and ``clip_region`` (fractions of valid tokens whose ratio was clipped
    where the clipping binds, as TRL counts them).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    valid = completion_mask.bool()
    mask = valid.to(logps.dtype)

    logps = torch.where(valid, logps, 0.0)
    old_logps = logps.detach() if old_logps is None else torch.where(valid, old_logps.detach(), 0.0)
    advantages = advantages.detach().reshape(-1, 1).to(logps.dtype)

    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss = -torch.min(ratio * advantages, clipped_ratio * advantages)
    if entropy_mask is not None:
        per_token_loss = per_token_loss * entropy_mask.to(logps.dtype)

    metrics = {}
    if ref_logps is not None:
        kl = _k3_kl(logps, torch.where(valid, ref_logps.detach(), 0.0))
        if beta != 0.0:
            per_token_loss = per_token_loss + beta * kl
        metrics["kl"] = _masked_mean(kl.detach(), mask).item()

    loss = _aggregate(per_token_loss, mask, loss_type, max_completion_length)

    ratio = ratio.detach()
    clipped_low = ((ratio < 1 - epsilon_low) & (advantages < 0)).to(mask.dtype)
    clipped_high = ((ratio > 1 + epsilon_high) & (advantages > 0)).to(mask.dtype)
    metrics["ratio_mean"] = _masked_mean(ratio, mask).item()
    metrics["clip_low"] = _masked_mean(clipped_low, mask).item()
    metrics["clip_high"] = _masked_mean(clipped_high, mask).item()
    metrics["clip_region"] = _masked_mean(torch.maximum(clipped_low, clipped_high), mask).item()
    return loss, metrics
