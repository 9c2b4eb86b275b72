import math

import pytest
import torch

from rporec_recbole.parsing import parse_output
from rporec_recbole.rewards import (
    RewardWeights,
    compression_reward,
    entropy_reward,
    format_reward,
    length_reward,
    rank_reward,
    similarity_reward,
    token_entropies,
    total_reward,
)

WELL_FORMED = "<think>likes jazz</think><answer>Kind of Blue</answer>"


# token_entropies


def test_entropy_of_uniform_logits_is_log_vocabulary_size():
    entropies = token_entropies(torch.zeros(2, 3, 8))
    assert entropies.shape == (2, 3)
    assert torch.allclose(entropies, torch.full((2, 3), math.log(8)))


def test_entropy_of_a_known_distribution():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert token_entropies(logits).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_entropy_is_finite_for_huge_and_minus_infinite_logits():
    logits = torch.tensor([[1e4, 1e4, -math.inf], [5.0, -math.inf, -math.inf]])
    entropies = token_entropies(logits)
    assert entropies[0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert entropies[1].item() == 0.0


def test_entropy_does_not_depend_on_chunk_size_and_matches_the_textbook_formula():
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits.double(), dim=-1)
    textbook = -(probs * probs.log()).sum(dim=-1).float()
    assert torch.allclose(token_entropies(logits, chunk_size=1), textbook, atol=1e-6)
    assert torch.allclose(token_entropies(logits, chunk_size=4), textbook, atol=1e-6)


def test_entropy_of_bfloat16_logits_is_computed_in_float32():
    entropies = token_entropies(torch.zeros(2, 4, dtype=torch.bfloat16))
    assert entropies.dtype == torch.float32
    assert torch.allclose(entropies, torch.full((2,), math.log(4)))


# format and length


def test_format_reward_is_one_only_for_well_formed_output():
    assert format_reward(parse_output(WELL_FORMED)) == 1.0
    assert format_reward(parse_output("<think>likes jazz</think> Kind of Blue")) == 0.0


def test_length_reward_counts_characters_before_think_and_after_answer():
    parsed = parse_output("x" * 10 + WELL_FORMED + "y" * 20)
    assert length_reward(parsed) == pytest.approx(0.7)


def test_length_reward_ignores_text_between_think_and_answer():
    parsed = parse_output("<think>r</think>" + "z" * 50 + "<answer>a</answer>")
    assert length_reward(parsed) == 1.0


def test_length_reward_is_floored_at_zero():
    assert length_reward(parse_output("x" * 150 + WELL_FORMED)) == 0.0


def test_length_reward_limit_is_configurable():
    assert length_reward(parse_output("x" * 10 + WELL_FORMED), max_chars=40) == pytest.approx(0.75)


# rank


@pytest.mark.parametrize("target, expected", [(1, 1.0), (2, 1 / math.log2(3)), (0, 0.5)])
def test_rank_reward_is_the_dcg_of_the_target_rank(target, expected):
    assert rank_reward(torch.tensor([0.1, 0.9, 0.5]), target) == pytest.approx(expected)


def test_rank_reward_at_rank_seven():
    scores = [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert rank_reward(scores, 6) == pytest.approx(1 / 3)


def test_rank_reward_ties_count_against_the_target():
    assert rank_reward(torch.tensor([1.0, 1.0, 1.0]), 0) == pytest.approx(0.5)
    assert rank_reward(torch.tensor([2.0, 2.0, 1.0]), 1) == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rank_reward_is_zero_when_any_score_is_not_finite(bad):
    assert rank_reward(torch.tensor([3.0, bad, 1.0]), 0) == 0.0


# compression


def test_compression_reward_is_the_length_ratio():
    assert compression_reward("abc", "abcdef") == pytest.approx(0.5)


def test_compression_reward_is_clipped_at_one():
    assert compression_reward("a longer summary", "short") == 1.0


def test_compression_reward_ignores_surrounding_whitespace():
    assert compression_reward("  ab \n", "\nabcd   ") == pytest.approx(0.5)


def test_compression_reward_is_zero_for_empty_reasoning_or_summary():
    assert compression_reward("summary", "") == 0.0
    assert compression_reward("summary", "   ") == 0.0
    assert compression_reward("", "reasoning") == 0.0


# similarity


def test_similarity_reward_for_identical_and_orthogonal_embeddings():
    assert similarity_reward(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])) == 1.0
    assert similarity_reward(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == 0.0


def test_similarity_reward_uses_a_strict_configurable_threshold():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])  # cosine 0.7071
    assert similarity_reward(a, b, threshold=0.7) == 1.0
    assert similarity_reward(a, b, threshold=0.71) == 0.0
    assert similarity_reward(a, a, threshold=1.0) == 0.0


def test_similarity_reward_is_zero_for_zero_or_non_finite_embeddings():
    assert similarity_reward(torch.zeros(3), torch.ones(3)) == 0.0
    assert similarity_reward(torch.tensor([math.nan, 1.0]), torch.tensor([1.0, 1.0])) == 0.0


# entropy


def test_entropy_reward_is_top_fifth_mean_minus_mean():
    entropies = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert entropy_reward(entropies, torch.ones(5)) == pytest.approx(5.0 - 3.0)


def test_entropy_reward_only_looks_at_masked_tokens():
    entropies = torch.tensor([1.0, 2.0, 9.0, 3.0, 4.0])
    mask = torch.tensor([1, 1, 0, 1, 1])
    assert entropy_reward(entropies, mask) == pytest.approx(4.0 - 2.5)


def test_entropy_reward_rounds_the_top_count_up():
    entropies = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # 0.2 * 6 = 1.2 -> top 2 tokens (5, 6)
    assert entropy_reward(entropies, torch.ones(6)) == pytest.approx(5.5 - 3.5)


def test_entropy_reward_quantile_is_configurable():
    entropies = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert entropy_reward(entropies, torch.ones(4), quantile=0.5) == pytest.approx(3.5 - 2.5)


def test_entropy_reward_is_zero_without_tokens_or_spread():
    assert entropy_reward(torch.tensor([1.0, 2.0]), torch.zeros(2)) == 0.0
    assert entropy_reward(torch.full((6,), 2.5), torch.ones(6)) == 0.0


# total


def _components(**overrides):
    components = dict(format=1.0, length=0.5, rank=0.5, compression=0.2, similarity=1.0, entropy=0.3)
    components.update(overrides)
    return components


def test_default_weights_are_the_authors():
    assert RewardWeights() == RewardWeights(
        base=0.1, length=0.1, rank=0.5, compression=0.1, similarity=0.1, entropy=0.1
    )


def test_total_reward_with_default_weights():
    # 0.1 + 0.1*0.5 + 0.5*0.5 + 0.1*0.2 + 0.1*1.0 + 0.1*0.3
    assert total_reward(_components()) == pytest.approx(0.55)


def test_total_reward_is_zero_when_the_format_fails():
    assert total_reward(_components(format=0.0)) == 0.0


def test_total_reward_uses_the_given_weights():
    weights = RewardWeights(base=0.0, length=0.0, rank=1.0, compression=0.0, similarity=0.0, entropy=2.0)
    assert total_reward(_components(), weights) == pytest.approx(0.5 + 2.0 * 0.3)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_total_reward_is_nan_when_a_component_is_not_finite(bad):
    assert math.isnan(total_reward(_components(rank=bad)))
    assert math.isnan(total_reward(_components(format=0.0, entropy=bad)))


def test_total_reward_rejects_missing_or_unknown_components():
    components = _components()
    del components["similarity"]
    with pytest.raises(KeyError, match="similarity"):
        total_reward(components)
    with pytest.raises(KeyError, match="rnak"):
        total_reward(_components(rnak=1.0))


def test_rewards_of_a_hand_made_completion():
    parsed = parse_output("Hi! <think>she replays 90s grunge albums</think> <answer>Nevermind</answer>")
    components = dict(
        format=format_reward(parsed),
        length=length_reward(parsed),
        rank=rank_reward(torch.tensor([0.2, 0.8, 0.1, 0.5]), 3),
        compression=compression_reward("90s grunge fan", parsed.reasoning),
        similarity=1.0,
        entropy=0.0,
    )
    assert components["length"] == pytest.approx(0.96)
    assert components["rank"] == pytest.approx(1 / math.log2(3))
    assert components["compression"] == pytest.approx(14 / 29)
    expected = 0.1 + 0.1 * 0.96 + 0.5 / math.log2(3) + 0.1 * 14 / 29 + 0.1
    assert total_reward(components) == pytest.approx(expected)
