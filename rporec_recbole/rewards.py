"""Stage-2 reward terms, each a small function on plain inputs, and their weighted combination.

R = f * (base + w_len r_len + w_rank r_rank + w_comp r_comp + w_sim r_sim + w_ent r_ent)

Decisions:
- ``rank_reward`` breaks ties pessimistically: a candidate scoring exactly as high as the target ranks
  above it, so a RecHead that gives every item the same score earns the worst rank, not the best.
- Non-finite inputs: a non-finite candidate score makes ``rank_reward`` 0 and a non-finite embedding makes
  ``similarity_reward`` 0 (a broken input earns nothing). ``total_reward`` returns NaN when any component
  is non-finite, so a bug upstream is never silently turned into a plausible reward; ``group_advantages``
  in ``grpo.py`` gives such a completion's whole group zero advantage.
"""
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from rporec_recbole.parsing import ParsedOutput

REWARD_COMPONENTS = ("format", "length", "rank", "compression", "similarity", "entropy")


def token_entropies(logits, chunk_size=128):
    """Entropy of softmax(logits) over the last dimension, for every leading position.

    Works in float32 on chunks of rows so that (batch, length, vocabulary) logits never need a second
    full-size float32 copy. ``torch.special.entr`` gives 0 for zero probabilities (e.g. -inf logits),
    where ``p * log p`` would give NaN.
    """
    rows = logits.reshape(-1, logits.size(-1))
    chunks = [
        torch.special.entr(torch.softmax(chunk.float(), dim=-1)).sum(dim=-1)
        for chunk in rows.split(chunk_size)
    ]
    flat = torch.cat(chunks) if chunks else rows.new_zeros(0, dtype=torch.float32)
    return flat.reshape(logits.shape[:-1])


def format_reward(parsed: ParsedOutput):
    """f: 1.0 when the completion follows the think/answer format, else 0.0. It multiplies every other term."""
    return 1.0 if parsed.format_ok else 0.0


def length_reward(parsed: ParsedOutput, max_chars=100):
    """max(0, 1 - (chars before <think> + chars after </answer>) / max_chars): penalises stray text."""
    stray = len(parsed.prefix) + len(parsed.suffix)
    return max(0.0, 1.0 - stray / max_chars)


def rank_reward(scores, target_index):
    """1 / log2(rank + 1), rank the 1-based rank of the target among the candidate scores.

    Ties count against the target (pessimistic); any non-finite score gives 0.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(scores).all():
        return 0.0
    target = scores[target_index]
    others_at_least_as_high = int((scores >= target).sum()) - 1
    rank = 1 + others_at_least_as_high
    return 1.0 / math.log2(rank + 1)


def compression_reward(summary, reasoning):
    """clip(len(summary) / len(reasoning), 0, 1) on stripped text; 0 for blank reasoning.

    The summary is written by the frozen initial LLM: a reasoning that cannot be shortened much is already
    concise, so the ratio stays high.
    """
    reasoning_chars = len(reasoning.strip())
    if reasoning_chars == 0:
        return 0.0
    return min(1.0, len(summary.strip()) / reasoning_chars)


def similarity_reward(emb_reasoning, emb_summary, threshold=0.5):
    """1.0 if the cosine similarity of the two embeddings exceeds ``threshold``, else 0.0.

    A zero vector has cosine 0 (torch's eps), and non-finite embeddings give 0.
    """
    cosine = F.cosine_similarity(
        torch.as_tensor(emb_reasoning, dtype=torch.float32).reshape(-1),
        torch.as_tensor(emb_summary, dtype=torch.float32).reshape(-1),
        dim=0,
    )
    return 1.0 if bool(torch.isfinite(cosine)) and float(cosine) > threshold else 0.0


def entropy_reward(entropies, mask, quantile=0.2):
    """Mean of the top ``quantile`` entropies among the masked (reasoning) tokens minus their mean entropy.

    The top set has ceil(quantile * n) tokens, at least one, as in the authors' code. 0 when no token is
    masked in. Inputs are one completion's per-token entropies and its reasoning-token mask.
    """
    selected = entropies.reshape(-1)[mask.reshape(-1).bool()].double()
    count = selected.numel()
    if count == 0:
        return 0.0
    top_count = max(1, math.ceil(quantile * count))
    top_mean = torch.topk(selected, top_count).values.mean()
    return float(top_mean - selected.mean())


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward terms; the defaults are the authors'."""

    base: float = 0.1
    length: float = 0.1
    rank: float = 0.5
    compression: float = 0.1
    similarity: float = 0.1
    entropy: float = 0.1


def total_reward(components: dict, weights: RewardWeights = RewardWeights()):
    """R = f * (base + sum of weighted terms) for one completion.

    ``components`` maps each name in ``REWARD_COMPONENTS`` to a float ("format" is f). Missing or unknown
    names raise ``KeyError`` (a typo must not silently drop a term); a non-finite component gives NaN.
    """
    names = set(components)
    if names != set(REWARD_COMPONENTS):
        missing, unknown = set(REWARD_COMPONENTS) - names, names - set(REWARD_COMPONENTS)
        raise KeyError(f"reward components: missing {sorted(missing)}, unknown {sorted(unknown)}")
    values = {name: float(value) for name, value in components.items()}
    if not all(math.isfinite(value) for value in values.values()):
        return math.nan
    weighted = weights.base + sum(
        getattr(weights, field.name) * values[field.name] for field in fields(weights) if field.name != "base"
    )
    return values["format"] * weighted
