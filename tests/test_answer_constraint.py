"""Answers constrained to item texts: the prefix tree, constrained decoding on both generation paths, forcing with
the constraint, and a stage 1 + stage 2 run whose answers are all items."""
import json
import os

import pytest
import torch

from rporec_recbole.answer_constraint import ItemAnswerTrie
from rporec_recbole.answer_forcing import generate_with_forced_answer
from rporec_recbole.generation import GenerationEngine
from rporec_recbole.parsing import ANSWER_CLOSE, THINK_OPEN, parse_output
from rporec_recbole.validation import ConfigValueError
from conftest import mini_config
from test_generation import _randomize
from test_grpo_trainer import RL_RUN, run_and_keep_trainer

ITEM_TEXTS = ["", "Heat (1995)", "Heat (1996), Action", "Toy Story (1995)", "Heat (1995)", "  "]


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


@pytest.fixture()
def trie(tokenizer):
    return ItemAnswerTrie(tokenizer, ITEM_TEXTS)


def test_trie_allows_exactly_the_continuations_of_item_texts(tokenizer, trie):
    heat, toy = ids(tokenizer, "Heat (1995)"), ids(tokenizer, "Toy Story (1995)")
    closer = ids(tokenizer, ANSWER_CLOSE)
    assert sorted(trie.allowed([])) == sorted({heat[0], toy[0]})  # padding and blank texts are not items
    assert trie.allowed(toy) == [closer[0]]
    assert trie.allowed(toy + closer) is None  # complete: nothing left to constrain
    assert trie.allowed([toy[0], heat[1]]) is None  # off the tree
    assert trie.max_length == max(len(ids(tokenizer, t + ANSWER_CLOSE)) for t in ITEM_TEXTS if t.strip())


def test_trie_needs_some_item_text(tokenizer):
    with pytest.raises(ValueError, match="no item has one"):
        ItemAnswerTrie(tokenizer, ["", "  "])


def decoded_answers(tokenizer, completions):
    return [tokenizer.decode(c) for c in completions]


@pytest.mark.parametrize("do_sample", [False, True])
def test_constrained_decoding_writes_item_texts_on_the_fast_path_and_the_hf_fallback(tiny_llm, tokenizer, trie,
                                                                                    monkeypatch, do_sample):
    llm = _randomize(tiny_llm)
    prompts = [ids(tokenizer, f"Next film after film {n}? <answer>") for n in range(5)]
    items = {text + ANSWER_CLOSE for text in ITEM_TEXTS if text.strip()}

    def run():
        engine = GenerationEngine(llm, tokenizer, max_batch_size=3)
        return engine.generate_ids(prompts, max_new_tokens=trie.max_length, stop_strings=[ANSWER_CLOSE],
                                   num_return_sequences=2, do_sample=do_sample, allowed_tokens=trie.allowed,
                                   generator=torch.Generator().manual_seed(0))

    assert GenerationEngine(llm, tokenizer).uses_fast_path
    fast = run()
    monkeypatch.setattr(GenerationEngine, "uses_fast_path", property(lambda self: False))
    fallback = run()
    for completions in (fast, fallback):
        assert set(decoded_answers(tokenizer, completions)) <= items
    if not do_sample:  # the same tokens on both paths, as without the constraint
        assert fast == fallback
    # unconstrained, the random model writes no item at all: the constraint is what made them items
    free = GenerationEngine(llm, tokenizer).generate_ids(prompts, max_new_tokens=trie.max_length, do_sample=False,
                                                         stop_strings=[ANSWER_CLOSE])
    assert not set(decoded_answers(tokenizer, free)) & items


def test_forced_answers_under_the_constraint_are_items_with_a_budget_that_fits_them(tiny_llm, tokenizer, trie):
    engine = GenerationEngine(_randomize(tiny_llm), tokenizer, max_batch_size=4)
    prompts = [ids(tokenizer, f"Recommend a film after film {n}.") for n in range(3)]
    completions = generate_with_forced_answer(engine, prompts, reasoning_tokens=5, answer_tokens=1,
                                              num_return_sequences=2, answer_constraint=trie, do_sample=True,
                                              generator=torch.Generator().manual_seed(1))
    for completion in completions:
        parsed = parse_output(THINK_OPEN + tokenizer.decode(completion.token_ids))
        assert parsed.format_ok and parsed.answer in ITEM_TEXTS  # answer_tokens=1 did not cut it short
        # the item's tokens and its </answer> were sampled under the constraint: none of them is marked forced
        answer_and_closer = ids(tokenizer, parsed.answer + ANSWER_CLOSE)
        assert completion.token_ids[-len(answer_and_closer):] == answer_and_closer
        assert not any(completion.forced[-len(answer_and_closer):])


def test_constrain_answer_needs_force_answer(mini_movielens, tmp_path):
    from rporec_recbole.quick_start import run_recbole_rporec
    with pytest.raises(ConfigValueError, match="needs force_answer"):
        run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(mini_movielens, tmp_path,
                                                                         constrain_answer=True))


def test_a_constrained_run_answers_with_items_in_stage_1_and_stage_2(mini_movielens, tmp_path, monkeypatch):
    config = mini_config(mini_movielens, tmp_path, **{**RL_RUN, "force_answer": True, "constrain_answer": True,
                                                      "rl_eval_step": 0})
    _, trainer = run_and_keep_trainer(monkeypatch, config)
    items = set(trainer.model.item_texts[1:])
    assert all(h["reward/format"] == 1.0 for h in trainer.rl_history)

    stores = tmp_path / "reasoning" / "ml-mini"
    texts = []
    for store in os.listdir(stores):  # the initial policy's (stage 1) and the tuned policy's (evaluation)
        assert json.loads((stores / store / "settings.json").read_text())["constrain_answer"] is True
        texts += [json.loads(line)["text"] for line in (stores / store / "reasoning.jsonl").read_text().splitlines()]
    parsed = [parse_output(THINK_OPEN + t) for t in texts]
    assert parsed and all(p.format_ok and p.answer in items for p in parsed)
