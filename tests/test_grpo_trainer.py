"""Stage 2: the GRPO trainer learns, skips non-finite steps, checkpoints/resumes, and runs end to end."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from conftest import mini_config
from rporec_recbole import trainer as trainer_module
from rporec_recbole.grpo_trainer import (
    GRPOSettings, GRPOTrainer, collate, completion_logps, reasoning_token_mask,
)
from rporec_recbole.parsing import THINK_OPEN, parse_output
from rporec_recbole.per_user import per_user_ndcg
from rporec_recbole.quick_start import run_recbole_rporec


def chat_prompts(tokenizer, topics):
    return [tokenizer.apply_chat_template([{"role": "user", "content": f"Say something about {t}."}], tokenize=False,
                                          add_generation_prompt=True) for t in topics]


def yes_no_llm(tiny_llm, tokenizer):
    """The tiny random LLM made to answer mostly " yes" or " no", at random, so that GRPO has something to learn.

    Every token embedding gets a common direction, so the final hidden state points along it whatever the
    context; " yes" and " no" get an extra share of it (they dominate sampling) and opposite shares of a
    second direction that only a trained adapter can add to the hidden state.
    """
    (yes,), (no,) = tokenizer(" yes").input_ids, tokenizer(" no").input_ids
    table = tiny_llm.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    common = F.normalize(torch.randn(table.shape[1], generator=generator), dim=0)
    side = torch.randn(table.shape[1], generator=generator)
    side = F.normalize(side - (side @ common) * common, dim=0)
    with torch.no_grad():
        table += common
        table[yes] += 1.4 * common + 0.3 * side
        table[no] += 1.4 * common - 0.3 * side
    return tiny_llm, yes


def test_grpo_raises_a_learnable_reward(tiny_llm, tokenizer):
    model, yes = yes_no_llm(tiny_llm, tokenizer)
    # lr 1e-2 was seed-fragile: with seed 1 the policy collapsed into empty completions (reward 0 for good)
    settings = GRPOSettings(prompts_per_step=2, num_generations=4, max_completion_length=6, learning_rate=3e-3,
                            lora_r=8, lora_alpha=16, seed=0)
    torch.manual_seed(0)
    grpo = GRPOTrainer(model, tokenizer, settings, Accelerator(cpu=True))

    def share_of_yes(completions):
        rewards = torch.tensor([sum(t == yes for t in ids) / max(1, len(ids)) for ids in completions.token_ids])
        return rewards, {"yes": rewards}

    prompts = chat_prompts(tokenizer, ["cats", "rain"])
    rewards = [grpo.train_step(prompts, [0, 1], share_of_yes)["reward"] for _ in range(30)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.12, rewards  # measured +0.16 (seed 0) and +0.18 (seed 1)
    assert grpo.step == 30


def test_a_step_with_a_non_finite_reward_changes_nothing(tiny_llm, tokenizer):
    settings = GRPOSettings(prompts_per_step=2, num_generations=2, max_completion_length=3, lora_r=4, seed=0)
    grpo = GRPOTrainer(tiny_llm, tokenizer, settings, Accelerator(cpu=True))
    before = {n: p.detach().clone() for n, p in grpo.pair.policy.named_parameters() if p.requires_grad}

    def broken(completions):
        # the second group alone has a signal (its advantages are not 0), so a step that ran would move the weights
        rewards = torch.tensor([math.nan, 1.0, 0.0, 1.0])
        return rewards, {"format": rewards}

    metrics = grpo.train_step(chat_prompts(tokenizer, ["cats", "rain"]), [0, 1], broken)
    assert metrics["skipped"] and grpo.nonfinite_in_a_row == 1
    assert not grpo.optimizer.state  # not even Adam's moments were started
    for name, param in grpo.pair.policy.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, before[name]), name


@pytest.mark.parametrize("options, mixed_precision", [
    ({"lora": False}, "no"),  # full-parameter training keeps a frozen reference copy
    ({"gradient_checkpointing": True, "gradient_accumulation_steps": 2}, "no"),
    ({}, "bf16"),
])
def test_training_options_take_a_finite_step_that_moves_the_weights(tiny_llm, tokenizer, options, mixed_precision):
    from accelerate.state import AcceleratorState

    settings = GRPOSettings(prompts_per_step=1, num_generations=4, max_completion_length=4, lora_r=4, seed=0,
                            learning_rate=1e-2, **options)
    AcceleratorState._reset_state(True)  # Accelerate keeps one mixed-precision setting per process
    try:
        grpo = GRPOTrainer(tiny_llm, tokenizer, settings, Accelerator(cpu=True, mixed_precision=mixed_precision))
        initial = {n: p.detach().clone() for n, p in grpo.pair.policy.named_parameters() if p.requires_grad}
        assert initial and all(("lora" in n) == settings.lora for n in initial)

        def varied(completions):
            rewards = torch.tensor([0.0, 1.0, 0.5, 0.25])
            return rewards, {"format": rewards}

        metrics = grpo.train_step(chat_prompts(tokenizer, ["cats"]), [0], varied)
    finally:
        AcceleratorState._reset_state(True)
    assert not metrics["skipped"] and math.isfinite(metrics["loss"])
    assert any(not torch.equal(p, initial[n]) for n, p in grpo.pair.policy.named_parameters() if p.requires_grad)
    if not settings.lora:  # full-parameter training: the reference is a frozen copy of the initial weights
        with grpo.pair.reference() as reference:
            assert all(torch.equal(p, initial[n]) for n, p in reference.named_parameters())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logps_match_a_plain_forward(tiny_llm, tokenizer, temperature):
    prompts, completions = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]]
    inputs = collate(prompts, completions, tokenizer.pad_token_id)
    logps, entropies = completion_logps(tiny_llm, inputs, temperature, with_entropies=True)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        logits = tiny_llm(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1] / temperature
        log_probs = logits.log_softmax(-1)
        expected = log_probs.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
        torch.testing.assert_close(logps[row, :len(completion)], expected, rtol=1e-4, atol=1e-5)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        torch.testing.assert_close(entropies[row, :len(completion)], entropy, rtol=1e-4, atol=1e-5)
    assert inputs.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_forced_tokens_stay_in_the_input_but_out_of_the_completion_mask(tokenizer):
    forced = [[False, True], [True, False, True]]  # per completion token; the shorter row is padded
    inputs = collate([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]], tokenizer.pad_token_id, forced)
    assert inputs.completion_mask.tolist() == [[1, 0, 0], [0, 1, 0]]
    assert inputs.input_ids[:, -3:].tolist() == [[10, 11, tokenizer.pad_token_id], [12, 13, 14]]


def test_reasoning_mask_stops_where_think_closes(tokenizer):
    ids = tokenizer("I like dramas.</think> <answer>Heat</answer>", add_special_tokens=False).input_ids
    mask = reasoning_token_mask(tokenizer, ids)
    reasoning = tokenizer.decode([t for t, keep in zip(ids, mask) if keep])
    assert reasoning == "I like dramas."
    assert reasoning_token_mask(tokenizer, ids[:3]).all()  # never closed: all of it is reasoning


RL_RUN = dict(rl=True, rl_steps=2, rl_save_step=1, rl_prompts_per_step=2, rl_num_generations=2,
              rl_max_completion_length=4, rl_summary_max_tokens=4, rl_eval_step=2, rl_eval_samples=4,
              loss_type="sampled_softmax", train_batch_size=256 * 4, use_collaborative=False,  # cheap stage 1
              train_neg_sample_args={"distribution": "uniform", "sample_num": 4, "alpha": 1.0, "dynamic": False,
                                     "candidate_num": 0})


def run_and_keep_trainer(monkeypatch, config):
    made = []
    original = trainer_module.RPORecTrainer.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(trainer_module.RPORecTrainer, "__init__", keep)
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=config)
    return result, made[0]


def test_rl_end_to_end_then_resume(mini_movielens, tmp_path, monkeypatch, caplog):
    config = mini_config(mini_movielens, tmp_path, **{**RL_RUN, "rl_trim_heap_mb": 0})  # trim after every step
    result, trainer = run_and_keep_trainer(monkeypatch, config)

    # the random tiny LLM never writes the tags: every reward is 0, and the run says so instead of staying silent
    assert all(h["reward/format"] == 0.0 for h in trainer.rl_history)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("no completion parsed as <think>" in w for w in warnings)
    assert any("RL: 2 of 2 steps had the same reward for every completion" in w for w in warnings)

    # both stages reported, stage 2 is what the run returns
    assert set(trainer.stage_results) == {"stage1", "stage2"}
    for stage in trainer.stage_results.values():
        assert set(stage) == {"valid", "test"} and "ndcg@10" in stage["test"]
    assert result["test_result"] == trainer.stage_results["stage2"]["test"]
    # each stage's test users are kept for the paired tests, in stage order, averaging to that stage's NDCG@10
    for split in ("test", "valid"):
        assert list(result[f"per_user_{split}"]) == ["stage1", "stage2"]
        for stage, evaluation in result[f"per_user_{split}"].items():
            ndcg = per_user_ndcg(evaluation, k=10)
            assert round(sum(ndcg.values()) / len(ndcg), 4) == trainer.stage_results[stage][split]["ndcg@10"]
    history = trainer.rl_history
    assert [h["step"] for h in history] == [1, 2]
    for name in ("reward", "reward/format", "reward/length", "reward/rank", "reward/compression",
                 "reward/similarity", "reward/entropy", "kl", "clip_region", "entropy", "completion_length"):
        assert math.isfinite(history[0][name]), name
    assert 0.0 <= history[-1]["valid_ndcg@10"] <= 1.0
    assert [h["heap_trimmed"] for h in history] == [1.0, 1.0] and all(h["resident_mb"] > 0 for h in history)

    # valid/test reasoning was regenerated under the tuned policy's own store namespace
    stores = tmp_path / "reasoning" / "ml-mini"
    policies = {json.loads((stores / s / "settings.json").read_text())["policy"] for s in os.listdir(stores)}
    assert policies == {"initial", trainer.policy_id} and trainer.policy_id.startswith("grpo-")

    # the latest RL checkpoint only, complete and atomic
    (checkpoint,) = os.listdir(trainer.rl_checkpoint_dir)
    assert checkpoint == "step-000002"
    folder = os.path.join(trainer.rl_checkpoint_dir, checkpoint)
    assert {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.yaml",
            "policy"} <= set(os.listdir(folder))
    assert "adapter_model.safetensors" in os.listdir(os.path.join(folder, "policy"))

    # resume: stage 1 is skipped, RL continues at step 3 with the saved history, adapter and optimizer
    resumed_config = mini_config(mini_movielens, tmp_path, **{**RL_RUN, "rl_steps": 3, "rl_eval_step": 0,
                                                              "rl_resume_checkpoint": folder})
    _, resumed = run_and_keep_trainer(monkeypatch, resumed_config)
    assert [h["step"] for h in resumed.rl_history] == [1, 2, 3]
    assert resumed.rl_history[:2] == json.loads(json.dumps(history))
    optimizer_steps = {int(s["step"]) for s in resumed.rl.optimizer.state_dict()["state"].values()}
    assert optimizer_steps == {3}


def test_answer_forcing_gives_stage_2_the_format_and_stage_1_the_answers(mini_movielens, tmp_path, monkeypatch):
    config = mini_config(mini_movielens, tmp_path, **{**RL_RUN, "force_answer": True, "answer_max_new_tokens": 3,
                                                      "rl_eval_step": 0})
    _, trainer = run_and_keep_trainer(monkeypatch, config)
    # the random tiny LLM never writes the tags itself (see the test above); forced, every completion has them
    assert all(h["reward/format"] == 1.0 for h in trainer.rl_history)
    assert all(h["reward"] >= 0.1 for h in trainer.rl_history)  # at least the base term, times f = 1
    # only sampled tokens count: at most 4 of reasoning and 3 of answer per completion
    assert all(0 < h["completion_length"] <= 4 + 3 for h in trainer.rl_history)

    # the reasoning store, under its own settings, holds answers in the format for stage 1
    stores = tmp_path / "reasoning" / "ml-mini"
    for store in os.listdir(stores):
        settings = json.loads((stores / store / "settings.json").read_text())
        # stores of the earlier forcing rule (reasoning stopped only at </think>) are not reused
        assert settings["force_answer"] is True and settings["forcing_rule"] == 2
        lines = (stores / store / "reasoning.jsonl").read_text().splitlines()
        assert lines and all(parse_output(THINK_OPEN + json.loads(line)["text"]).format_ok for line in lines)


def test_settings_must_split_over_processes():
    with pytest.raises(ValueError, match="split evenly"):
        GRPOSettings(prompts_per_step=3).check(num_processes=2)
    with pytest.raises(ValueError, match="micro-batches"):
        GRPOSettings(prompts_per_step=2, num_generations=3, gradient_accumulation_steps=4).check(num_processes=1)
