"""Answer forcing: the bridge and closing tags are appended only where the model did not write them, marked as
forced, and the result parses in the think/answer format."""
import torch

from rporec_recbole.answer_forcing import generate_with_forced_answer
from rporec_recbole.generation import GenerationEngine
from rporec_recbole.parsing import THINK_OPEN, parse_output


class ScriptedEngine:
    """Stands in for ``GenerationEngine``: returns the given texts as token ids, phase by phase, and records calls."""

    def __init__(self, tokenizer, phases):
        self.tokenizer = tokenizer
        self.phases = list(phases)
        self.calls = []

    def generate_ids(self, prompt_ids, max_new_tokens, stop_strings, num_return_sequences=1, **sampling):
        self.calls.append({"prompts": prompt_ids, "max_new_tokens": max_new_tokens, "stop": stop_strings,
                           "n": num_return_sequences})
        return [self.tokenizer(t, add_special_tokens=False).input_ids for t in self.phases.pop(0)]


def decoded(tokenizer, completion, forced):
    return tokenizer.decode([t for t, f in zip(completion.token_ids, completion.forced) if f == forced])


def test_tags_are_appended_only_where_the_model_did_not_write_them(tokenizer):
    engine = ScriptedEngine(tokenizer, [
        ["I like dramas", "Dramas again.</think>"],  # phase 1: row 0 runs out of budget, row 1 closes its think
        [" Heat", " Heat</answer>"],  # phase 2: row 0 runs out of budget, row 1 closes its answer
    ])
    prompt = tokenizer("Q:", add_special_tokens=False).input_ids
    unclosed, closed = generate_with_forced_answer(engine, [prompt], reasoning_tokens=7, answer_tokens=5,
                                                   num_return_sequences=2)
    assert tokenizer.decode(unclosed.token_ids) == "I like dramas\n</think>\n<answer> Heat</answer>"
    assert decoded(tokenizer, unclosed, forced=True) == "\n</think>\n<answer></answer>"
    assert tokenizer.decode(closed.token_ids) == "Dramas again.</think>\n<answer> Heat</answer>"
    assert decoded(tokenizer, closed, forced=True) == "\n<answer>"  # the model's own tags are not forced
    assert all(parse_output(THINK_OPEN + tokenizer.decode(c.token_ids)).format_ok for c in (unclosed, closed))

    reasoning_call, answer_call = engine.calls
    assert reasoning_call["max_new_tokens"] == 7 and reasoning_call["n"] == 2
    assert reasoning_call["stop"] == ["</think>", "<answer>"]
    assert (answer_call["max_new_tokens"], answer_call["stop"], answer_call["n"]) == (5, ["</answer>"], 1)
    # phase 2 continues each row from its prompt, its own reasoning and its bridge
    assert answer_call["prompts"][0] == prompt + unclosed.token_ids[:len(answer_call["prompts"][0]) - len(prompt)]


def test_an_answer_opened_while_reasoning_is_cut_off_before_the_bridge(tokenizer):
    """SmolLM2 often wrote ``<answer>`` before ``</think>`` (the repeated tag broke 19-27% of the forced completions
    on ml-100k): phase 1 stops there and the tag goes, also where a token holds text before it (`` <``)."""
    engine = ScriptedEngine(tokenizer, [
        ["I like dramas\n<answer>", "I like dramas <answer>", "Dramas.</think>"],
        [" Heat</answer>"] * 3,
    ])
    prompts = [tokenizer(f"Q{n}:", add_special_tokens=False).input_ids for n in range(3)]
    newline, space, closed = generate_with_forced_answer(engine, prompts, reasoning_tokens=7, answer_tokens=5)
    assert tokenizer.decode(newline.token_ids) == "I like dramas\n\n</think>\n<answer> Heat</answer>"
    assert tokenizer.decode(space.token_ids) == "I like dramas\n</think>\n<answer> Heat</answer>"
    assert tokenizer.decode(closed.token_ids) == "Dramas.</think>\n<answer> Heat</answer>"
    for completion in (newline, space):
        assert decoded(tokenizer, completion, forced=True) == "\n</think>\n<answer>"
        assert parse_output(THINK_OPEN + tokenizer.decode(completion.token_ids)).format_ok


def test_a_random_llm_gets_the_format_and_a_seed_reproduces_it(tiny_llm, tokenizer):
    engine = GenerationEngine(tiny_llm, tokenizer, max_batch_size=4)
    prompts = [tokenizer(f"Recommend a film after film {n}.", add_special_tokens=False).input_ids for n in range(3)]

    def run(seed):
        return generate_with_forced_answer(engine, prompts, reasoning_tokens=6, answer_tokens=4, num_return_sequences=2,
                                           do_sample=True, generator=torch.Generator().manual_seed(seed))

    first = run(0)
    assert len(first) == 6
    for completion in first:  # a random model never closes its tags: every completion gets the forced ones
        parsed = parse_output(THINK_OPEN + tokenizer.decode(completion.token_ids))
        assert parsed.format_ok
        assert decoded(tokenizer, completion, forced=True) == "\n</think>\n<answer></answer>"
        assert len(completion.token_ids) - sum(completion.forced) <= 6 + 4
    assert [c.token_ids for c in run(0)] == [c.token_ids for c in first]
    assert [c.token_ids for c in run(1)] != [c.token_ids for c in first]
