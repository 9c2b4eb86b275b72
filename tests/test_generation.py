"""GenerationEngine against HF ``generate``: greedy tokens, sampling distribution, EOS/stop strings, ordering, PEFT."""
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM, Qwen2Config, \
    Qwen2ForCausalLM
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from rporec_recbole import generation
from rporec_recbole.generation import GenerationEngine, _left_pad, _SamplingOptions, _in_nucleus, \
    _top_p_candidates, sample_next_tokens
from rporec_recbole.llm import EMBEDDED_LLM, build_tiny_llm, load_llm

PROMPT_LENGTHS = (5, 17, 9, 30, 1)


def _randomize(model, std=0.3, seed=0):
    """Larger random weights than the default init, so that greedy continuations vary from token to token."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, std, generator=generator)
    return model


@pytest.fixture()
def varied_llm(tiny_llm):
    return _randomize(tiny_llm)


@pytest.fixture()
def prompts(tokenizer):
    rng = random.Random(0)
    return [[rng.randrange(len(tokenizer)) for _ in range(n)] for n in PROMPT_LENGTHS]


def hf_greedy(model, prompt, max_new_tokens, eos_token_id=None):
    """HF greedy continuation of one unpadded prompt, cut before EOS."""
    eos = model.generation_config.eos_token_id if eos_token_id is None else eos_token_id
    out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    tokens = out[0, len(prompt):].tolist()
    return tokens[:tokens.index(eos)] if eos in tokens else tokens


def tv_distance(counts, probs):
    freq = counts.float() / counts.sum()
    return 0.5 * (freq - probs).abs().sum().item()


def test_greedy_matches_hf_with_mixed_lengths_in_one_batch(varied_llm, tokenizer, prompts):
    engine = GenerationEngine(varied_llm, tokenizer, max_batch_size=8)
    assert engine.uses_fast_path
    got = engine.generate_ids(prompts, 12, do_sample=False)
    # the reference runs every prompt alone, so no padding at all on the HF side
    expected = [hf_greedy(varied_llm, p, 12) for p in prompts]
    assert got == expected
    assert len({tuple(t) for t in got}) == len(prompts)  # the prompts really lead to different continuations


def test_prefill_in_row_chunks_gives_the_same_tokens(varied_llm, tokenizer, prompts, monkeypatch):
    # 30 tokens per chunk: the 30-token-wide padded batch prefills one row at a time, into its own cache rows
    monkeypatch.setattr(generation, "_PREFILL_CHUNK_TOKENS", 30)
    got = GenerationEngine(varied_llm, tokenizer, max_batch_size=8).generate_ids(prompts, 12, do_sample=False)
    assert got == [hf_greedy(varied_llm, p, 12) for p in prompts]


def test_greedy_matches_hf_padded_batch_and_restores_order_across_small_batches(varied_llm, tokenizer, prompts):
    input_ids, attention_mask = _left_pad(prompts, tokenizer.pad_token_id)
    out = varied_llm.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id)
    eos = varied_llm.generation_config.eos_token_id
    expected = [t[:t.index(eos)] if eos in t else t for t in out[:, input_ids.shape[1]:].tolist()]
    got = GenerationEngine(varied_llm, tokenizer, max_batch_size=2).generate_ids(prompts, 10, do_sample=False)
    assert got == expected


def test_shared_prompt_prefix_computed_once_gives_the_same_tokens(varied_llm, tokenizer, prompts):
    """Prompts that share a long start (as chat template + instruction do), one of them nothing else."""
    prefix = prompts[3][:20]
    shared = [prefix + p for p in prompts[:3]] + [prefix]
    got = GenerationEngine(varied_llm, tokenizer).generate_ids(shared, 10, do_sample=False, num_return_sequences=2)
    expected = [hf_greedy(varied_llm, p, 10) for p in shared]
    assert got == [tokens for tokens in expected for _ in range(2)]


def test_num_return_sequences_are_grouped_by_prompt(varied_llm, tokenizer, prompts):
    engine = GenerationEngine(varied_llm, tokenizer, max_batch_size=4)  # 3 rows per prompt: groups straddle batches
    single = engine.generate_ids(prompts, 6, do_sample=False)
    repeated = engine.generate_ids(prompts, 6, do_sample=False, num_return_sequences=3)
    assert repeated == [tokens for tokens in single for _ in range(3)]


def test_eos_ends_a_row_early_and_other_rows_continue(varied_llm, tokenizer, prompts):
    free = GenerationEngine(varied_llm, tokenizer).generate_ids(prompts, 12, do_sample=False)
    eos = free[0][4]  # a token the first prompt produces at step 5: it becomes EOS
    varied_llm.generation_config.eos_token_id = [eos]
    got = GenerationEngine(varied_llm, tokenizer).generate_ids(prompts, 12, do_sample=False)
    assert got[0] == free[0][:free[0].index(eos)]
    assert got == [hf_greedy(varied_llm, p, 12, eos_token_id=eos) for p in prompts]
    assert any(len(t) == 12 for t in got)  # rows that never meet EOS still run to the end after the early drop


def test_min_new_tokens_bans_eos(varied_llm, tokenizer, prompts):
    free = GenerationEngine(varied_llm, tokenizer).generate_ids(prompts[:1], 12, do_sample=False)
    varied_llm.generation_config.eos_token_id = free[0][0]  # the very first greedy token is EOS
    engine = GenerationEngine(varied_llm, tokenizer)
    assert engine.generate_ids(prompts[:1], 12, do_sample=False) == [[]]
    forced = engine.generate_ids(prompts[:1], 12, do_sample=False, min_new_tokens=3)
    assert len(forced) == 1 and len(forced[0]) >= 3 and free[0][0] not in forced[0][:3]


def test_stop_string_cuts_after_the_token_that_completes_it(varied_llm, tokenizer, prompts):
    engine = GenerationEngine(varied_llm, tokenizer)
    free = engine.generate_ids(prompts[:2], 16, do_sample=False)
    stop = tokenizer.decode(free[0][6:8])  # spans two tokens
    expected_length = next(n for n in range(1, 17) if stop in tokenizer.decode(free[0][:n]))
    got = engine.generate_ids(prompts[:2], 16, do_sample=False, stop_strings=[stop])
    assert got[0] == free[0][:expected_length]
    assert expected_length < 16
    other = next((n for n in range(1, 17) if stop in tokenizer.decode(free[1][:n])), 16)
    assert got[1] == free[1][:other]


def test_generate_decodes_text_prompts(varied_llm, tokenizer):
    engine = GenerationEngine(varied_llm, tokenizer)
    texts = ["<|im_start|>user\nhello<|im_end|>\n", "a longer prompt about movies and their titles"]
    got = engine.generate(texts, max_new_tokens=5, do_sample=False)
    ids = engine.generate_ids([tokenizer(t, add_special_tokens=False).input_ids for t in texts], 5, do_sample=False)
    assert got == tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert all(isinstance(t, str) and t for t in got)


def test_top_p_candidates_match_hf_warper_including_large_nuclei():
    torch.manual_seed(0)
    # a peaked row (nucleus of a few tokens) and a flat row whose nucleus is far above the first top-k guess
    logits = torch.stack([torch.randn(3000) * 4, torch.randn(3000) * 0.05])
    for top_p in (0.5, 0.9):
        probs = torch.softmax(logits, dim=-1)
        weights, indices = _top_p_candidates(probs, top_p)
        hf_kept = TopPLogitsWarper(top_p)(None, logits.clone()).isfinite()
        for row in range(2):
            ours = set(indices[row][weights[row] > 0].tolist())
            assert ours == set(hf_kept[row].nonzero().flatten().tolist())
        assert len(ours) > 1000  # the flat row needed more than the default candidate count


def test_nucleus_membership_matches_hf_warper_for_every_token():
    torch.manual_seed(0)
    logits = torch.stack([torch.randn(3000) * 4, torch.randn(3000) * 0.05])
    probs = torch.softmax(logits, dim=-1)
    every_token = torch.arange(3000)
    for top_p in (0.5, 0.9):
        hf_kept = TopPLogitsWarper(top_p)(None, logits.clone()).isfinite()
        for row in range(2):
            ours = _in_nucleus(probs[row].expand(3000, -1), every_token, top_p)
            assert torch.equal(ours, hf_kept[row])


def test_tiny_top_p_falls_back_to_the_explicit_nucleus_after_redraws():
    # a flat row with top_p 0.001: a draw lands in the 2-3 token nucleus with probability ~0.001 per round
    logits = torch.randn(1, 3000) * 0.05
    options = _SamplingOptions(True, 1.0, 0.001, torch.Generator().manual_seed(0))
    tokens = sample_next_tokens(logits.expand(200, -1).clone(), options)
    nucleus = TopPLogitsWarper(0.001)(None, logits.clone()).isfinite()[0]
    assert nucleus[tokens].all()


def test_sampled_next_tokens_follow_hf_temperature_top_p_distribution():
    torch.manual_seed(1)
    logits = torch.randn(1, 40) * 2
    temperature, top_p, draws = 0.7, 0.8, 40000
    exact = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone())).softmax(-1)[0]
    options = _SamplingOptions(True, temperature, top_p, torch.Generator().manual_seed(0))
    tokens = sample_next_tokens(logits.expand(draws, -1), options)
    counts = torch.bincount(tokens, minlength=40)
    assert counts[exact == 0].sum() == 0
    assert tv_distance(counts, exact) < 0.02
    untempered = TopPLogitsWarper(top_p)(None, logits.clone()).softmax(-1)[0]
    assert tv_distance(counts, untempered) > 0.05  # the check above can tell a missing temperature apart


def test_engine_sampling_matches_exact_first_token_distribution(tokenizer):
    """The engine's own logits and sampling: the first sampled token after a left-padded prompt, many times.

    A 128-token vocabulary keeps 20000 rows cheap; EOS is banned for the first token, as HF's min_new_tokens does.
    """
    model = _randomize(build_tiny_llm(128), std=0.2)
    model.generation_config.eos_token_id = 127
    temperature, top_p, draws = 0.7, 0.9, 10000
    short, long = [5, 17, 99], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    logits = model(input_ids=torch.tensor([short])).logits[:, -1].detach()
    logits[:, 127] = -float("inf")
    exact = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits)).softmax(-1)[0]
    engine = GenerationEngine(model, tokenizer, max_batch_size=2 * draws)  # both prompts in one padded batch
    out = engine.generate_ids([long, short], 1, temperature=temperature, top_p=top_p, num_return_sequences=draws,
                              min_new_tokens=1, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor([t[0] for t in out[draws:]]), minlength=128)
    assert 3 <= int((exact > 0).sum()) <= 60
    assert counts[exact == 0].sum() == 0
    assert tv_distance(counts, exact) < 0.04
    untempered = TopPLogitsWarper(top_p)(None, logits.clone()).softmax(-1)[0]
    assert tv_distance(counts, untempered) > 0.08  # the check above can tell a missing temperature apart


def test_seeded_generator_reproduces_and_different_seeds_differ(varied_llm, tokenizer, prompts):
    engine = GenerationEngine(varied_llm, tokenizer)

    def run(seed):
        return engine.generate_ids(prompts, 8, top_p=0.95, num_return_sequences=2,
                                   generator=torch.Generator().manual_seed(seed))

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_peft_lora_model_matches_its_hf_generate_and_keeps_training_mode(varied_llm, tokenizer, prompts):
    from peft import LoraConfig, get_peft_model

    base_tokens = GenerationEngine(varied_llm, tokenizer).generate_ids(prompts, 10, do_sample=False)
    model = get_peft_model(varied_llm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # LoRA B starts at zero: give the adapter an effect
    model.train()
    engine = GenerationEngine(model, tokenizer)
    assert engine.uses_fast_path
    got = engine.generate_ids(prompts, 10, do_sample=False)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert got == [hf_greedy(model, p, 10) for p in prompts]
    assert got != base_tokens


@pytest.mark.parametrize("use_dora", [False, True])
def test_lora_on_all_projections_disabled_adapters_and_dora_match_hf(varied_llm, tokenizer, prompts, use_dora):
    """q/k/v and gate/up run fused with their adapters stacked; DoRA layers are called one by one."""
    from peft import LoraConfig, get_peft_model

    base_tokens = GenerationEngine(varied_llm, tokenizer).generate_ids(prompts, 10, do_sample=False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(varied_llm, LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=use_dora))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.eval()
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert (generation._linear_parts(q_proj) is None) == use_dora
    engine = GenerationEngine(model, tokenizer)
    got = engine.generate_ids(prompts, 10, do_sample=False)
    assert got == [hf_greedy(model, p, 10) for p in prompts]
    assert got != base_tokens
    with model.disable_adapter():
        assert engine.generate_ids(prompts, 10, do_sample=False) == base_tokens


def test_weight_updates_between_calls_are_seen(varied_llm, tokenizer, prompts):
    engine = GenerationEngine(varied_llm, tokenizer)
    before = engine.generate_ids(prompts, 8, do_sample=False)
    _randomize(varied_llm, seed=1)
    after = engine.generate_ids(prompts, 8, do_sample=False)
    assert after != before
    assert after == [hf_greedy(varied_llm, p, 8) for p in prompts]


def _tiny(config_class, model_class, vocab_size, **extra):
    config = config_class(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **extra)
    torch.manual_seed(0)
    return _randomize(model_class(config).eval())


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_other_llama_family_models_take_the_fast_path_and_match_hf(tokenizer, prompts, family):
    if family == "qwen2":
        model = _tiny(Qwen2Config, Qwen2ForCausalLM, len(tokenizer))
    else:
        model = _tiny(MistralConfig, MistralForCausalLM, len(tokenizer), sliding_window=None)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    engine = GenerationEngine(model, tokenizer)
    assert engine.uses_fast_path
    assert engine.generate_ids(prompts, 8, do_sample=False) == [hf_greedy(model, p, 8) for p in prompts]


def test_other_architectures_use_hf_generate_fallback(tokenizer, prompts):
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = _randomize(GPT2LMHeadModel(config).eval())
    engine = GenerationEngine(model, tokenizer, max_batch_size=4)
    assert not engine.uses_fast_path
    got = engine.generate_ids(prompts, 6, do_sample=False, num_return_sequences=2)
    expected = [hf_greedy(model, p, 6) for p in prompts]
    assert got == [tokens for tokens in expected for _ in range(2)]


def test_real_smollm2_bf16_greedy_matches_hf(tokenizer):
    model = load_llm(EMBEDDED_LLM, dtype=torch.bfloat16).eval()
    texts = ["<|im_start|>user\nName one famous science fiction movie.<|im_end|>\n<|im_start|>assistant\n",
             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]
    prompt_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    got = GenerationEngine(model, tokenizer).generate_ids(prompt_ids, 6, do_sample=False)
    assert got == [hf_greedy(model, p, 6) for p in prompt_ids]
