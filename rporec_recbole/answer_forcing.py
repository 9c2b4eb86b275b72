"""Answer forcing: a reasoning budget, after which the answer tags are written for the model.

Small backbones rarely close their own tags: SmolLM2-135M wrote the think/answer format in 1 of 200 RL
completions (``benchmarks/rl_run.md``), and the format flag multiplies the whole reward, so GRPO had no signal.
This is "budget forcing" (Muennighoff et al., 2025, "s1: Simple test-time scaling"), applied to the answer:

1. the model reasons for up to ``reasoning_tokens`` new tokens, stopping early at its own ``</think>`` or
   ``<answer>``; an ``<answer>`` opened before ``</think>`` is cut off (SmolLM2-135M did this in 19-27% of ml-100k
   completions, often several times, and the repeated tag broke the format);
2. the bridge ``</think>`` + ``<answer>`` is appended (only ``<answer>`` when the model closed ``</think>``);
3. the model writes the answer for up to ``answer_tokens`` new tokens, stopping at its own ``</answer>``;
4. ``</answer>`` is appended if the model did not write it.

The appended tokens are marked as forced: the policy did not sample them, so GRPO's loss leaves them out. The
format can still fail (blank reasoning or answer, tags the model wrote itself in the wrong place), and then the
format flag is 0 as without forcing.
"""
from dataclasses import dataclass

from rporec_recbole.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE


@dataclass(frozen=True)
class ForcedCompletion:
    """One completion's token ids and, per token, whether it was appended rather than sampled."""

    token_ids: list
    forced: list


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def _before_answer_tag(tokenizer, ids):
    """``ids`` without an ``<answer>`` the model opened while still reasoning, nor anything after it."""
    text = tokenizer.decode(ids)
    if ANSWER_OPEN not in text or THINK_CLOSE in text:
        return ids
    tag_start = text.index(ANSWER_OPEN)
    keep = len(ids)
    while keep and len(tokenizer.decode(ids[:keep])) > tag_start:  # a token may hold text before the tag too
        keep -= 1
    return ids[:keep]


def generate_with_forced_answer(engine, prompt_ids, reasoning_tokens, answer_tokens, num_return_sequences=1,
                                answer_constraint=None, **sampling):
    """``ForcedCompletion`` per (prompt, return sequence), in ``engine.generate_ids``'s order.

    ``sampling`` takes ``do_sample``, ``temperature``, ``top_p`` and ``generator``; both phases use it (the
    generator continues from phase 1 to phase 2, so a seeded call is reproducible). With ``answer_constraint``
    (an ``ItemAnswerTrie``) the answer is an item's text followed by ``</answer>``, and its budget is the longest
    of those instead of ``answer_tokens``, so that no answer is cut short.
    """
    tokenizer = engine.tokenizer
    reasoning = engine.generate_ids(prompt_ids, max_new_tokens=reasoning_tokens,
                                    stop_strings=[THINK_CLOSE, ANSWER_OPEN], num_return_sequences=num_return_sequences,
                                    **sampling)
    reasoning = [_before_answer_tag(tokenizer, ids) for ids in reasoning]
    row_prompts = [p for p in prompt_ids for _ in range(num_return_sequences)]
    bridges = [_encode(tokenizer, "\n" + ANSWER_OPEN if THINK_CLOSE in tokenizer.decode(ids)
                       else "\n" + THINK_CLOSE + "\n" + ANSWER_OPEN) for ids in reasoning]
    budget, allowed = ((answer_tokens, None) if answer_constraint is None
                       else (answer_constraint.max_length, answer_constraint.allowed))
    answers = engine.generate_ids([p + r + b for p, r, b in zip(row_prompts, reasoning, bridges)],
                                  max_new_tokens=budget, stop_strings=[ANSWER_CLOSE], allowed_tokens=allowed,
                                  **sampling)
    closer = _encode(tokenizer, ANSWER_CLOSE)
    completions = []
    for r, b, a in zip(reasoning, bridges, answers):
        tail = [] if ANSWER_CLOSE in tokenizer.decode(a) else closer
        completions.append(ForcedCompletion(r + b + a + tail, [False] * len(r) + [True] * len(b) + [False] * len(a)
                                            + [True] * len(tail)))
    return completions

