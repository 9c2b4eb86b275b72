"""Batched text generation for RPORec: reasoning store, GRPO rollouts, summaries and evaluation.

Two paths give the same results as HF ``generate`` (greedy: the same tokens; sampling: the same
temperature/top-p distribution):

* a fast path for Llama-family decoders (Llama, Qwen2 and Mistral without sliding windows), PEFT/LoRA-wrapped
  or not: a static KV cache written in place, the prefix that all prompts of a batch share (chat template and
  instruction) computed once, one prefill per prompt for ``num_return_sequences``, finished rows dropped from the
  batch, top-p sampling by redrawing tokens outside the nucleus instead of sorting the vocabulary, prefill in
  chunks of rows small enough to stay in cache, the projections that read the same input (q/k/v, gate/up) as one
  matmul, LoRA updates applied as one low-rank product per fused projection, and decoding attention that reads
  each key/value head once for all the query heads that share it. It calls the model's own norms, rotary
  embedding and LM head and reads the projection weights at the start of every call, so weight updates between
  calls are honoured and nothing derived from the weights is kept across calls;
* a fallback through the model's own ``generate`` for every other model.

Prompts are sorted by length before batching (less left padding) and results come back in the caller's order.
"""
import math
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from tqdm.auto import tqdm
from transformers import GenerationConfig

_TOP_P_CANDIDATES = 64  # top-p nuclei are usually smaller; k grows when a row needs more
_NUCLEUS_REDRAWS = 4  # rejection rounds of top-p sampling before the explicit nucleus (each accepts >= top_p)
_MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate prefill
_COMPACT_FRACTION = 8  # drop finished rows once they are 1/8 of the batch (a compaction costs about one step)
# Prefill runs this many tokens at a time (whole rows): activations of a few MB are reused from the allocator and
# stay in cache, while a 32 x 500-token prefill allocates fresh 40 MB tensors whose page faults cost more than the
# elementwise ops themselves (measured: bf16 silu 30 ms vs 8 ms per 13k x 1536 tensor on this CPU).
_PREFILL_CHUNK_TOKENS = 2048


class GenerationEngine:
    """Generates completions for chat-formatted prompts with a (possibly PEFT-wrapped) HF causal LM."""

    def __init__(self, model, tokenizer, max_batch_size: int = 32, show_progress: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.show_progress = show_progress

    @property
    def eos_token_ids(self):
        """EOS ids from the model's generation config, else the tokenizer's."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return [eos] if isinstance(eos, int) else list(eos)

    @property
    def uses_fast_path(self):
        return _fast_decoder_model(self.model) is not None

    @torch.no_grad()
    def generate_ids(self, prompt_ids: list[list[int]], max_new_tokens: int, do_sample: bool = True,
                     temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
                     generator: torch.Generator | None = None, stop_strings: list[str] | None = None,
                     min_new_tokens: int = 0, allowed_tokens=None) -> list[list[int]]:
        """Completion token ids (prompt excluded), one list per (prompt, return sequence) in order
        prompt0-seq0, prompt0-seq1, ..., cut after the first EOS (EOS itself excluded) or stop string.

        ``min_new_tokens`` bans EOS for that many steps, as in HF ``generate``. ``allowed_tokens`` constrains
        decoding: called with a row's completion so far, it returns the token ids that may come next (sampled
        from the renormalised distribution over them), or None for no constraint.
        """
        if not prompt_ids or max_new_tokens <= 0:
            return [[] for _ in range(len(prompt_ids) * num_return_sequences)]
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        options = _SamplingOptions(do_sample, temperature, top_p, generator)
        stopper = _Stopper(self.tokenizer, self.eos_token_ids, stop_strings or [])
        with _eval_mode(self.model):
            if self.uses_fast_path:
                results = self._generate_fast(prompt_ids, max_new_tokens, min_new_tokens, num_return_sequences,
                                              options, stopper, allowed_tokens)
            else:
                results = self._generate_fallback(prompt_ids, max_new_tokens, min_new_tokens, num_return_sequences,
                                                  options, stop_strings, allowed_tokens)
        return [stopper.cut(tokens) for tokens in results]

    def generate(self, prompts: list[str], **kwargs) -> list[str]:
        """Tokenize (prompts are already chat-formatted text), generate, decode without special tokens."""
        prompt_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        completions = self.generate_ids(prompt_ids, **kwargs)
        return self.tokenizer.batch_decode(completions, skip_special_tokens=True)

    def _batches(self, prompt_ids, num_return_sequences):
        """Batches of rows (a prompt index per row): prompts longest first, a prompt's return sequences adjacent."""
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        rows = [i for i in order for _ in range(num_return_sequences)]
        return [rows[start:start + self.max_batch_size] for start in range(0, len(rows), self.max_batch_size)]

    def _generate_fast(self, prompt_ids, max_new_tokens, min_new_tokens, num_return_sequences, options, stopper,
                       allowed_tokens):
        decoder = _FastDecoder(_fast_decoder_model(self.model))
        completions = []
        for batch_rows in tqdm(self._batches(prompt_ids, num_return_sequences), desc="generate",
                               disable=not self.show_progress):
            unique = {prompt: n for n, prompt in enumerate(dict.fromkeys(batch_rows))}  # one prefill per prompt
            batch = decoder.generate([prompt_ids[i] for i in unique], [unique[i] for i in batch_rows],
                                     max_new_tokens, min_new_tokens, options, stopper, allowed_tokens)
            completions.extend(zip(batch_rows, batch))
        return _restore_order(completions, len(prompt_ids), num_return_sequences)

    def _generate_fallback(self, prompt_ids, max_new_tokens, min_new_tokens, num_return_sequences, options,
                           stop_strings, allowed_tokens):
        """HF ``generate`` on the same length-sorted batches; a fresh config so no model-specific defaults sneak in."""
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=options.do_sample,
            temperature=options.temperature if options.do_sample else None,
            top_p=options.top_p if options.do_sample else None, top_k=None,
            eos_token_id=self.eos_token_ids or None, pad_token_id=_pad_token_id(self.tokenizer, self.eos_token_ids),
            stop_strings=stop_strings or None,
        )
        completions = []
        with torch.random.fork_rng(devices=[], enabled=options.generator is not None):
            if options.generator is not None:  # HF generate draws from the global RNG: seed it from the generator
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=options.generator)))
            for batch_rows in tqdm(self._batches(prompt_ids, num_return_sequences), desc="generate",
                                   disable=not self.show_progress):
                input_ids, attention_mask = _left_pad([prompt_ids[i] for i in batch_rows], config.pad_token_id)
                out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                          generation_config=config, tokenizer=self.tokenizer if stop_strings else None,
                                          prefix_allowed_tokens_fn=self._hf_prefix_constraint(allowed_tokens,
                                                                                              input_ids.shape[1]))
                completions.extend(zip(batch_rows, out[:, input_ids.shape[1]:].tolist()))
        return _restore_order(completions, len(prompt_ids), num_return_sequences)

    def _hf_prefix_constraint(self, allowed_tokens, prompt_width):
        """``allowed_tokens`` as HF's ``prefix_allowed_tokens_fn`` (which sees prompt and completion, and takes
        every token id for no constraint)."""
        if allowed_tokens is None:
            return None
        every_token = range(self.model.get_output_embeddings().weight.shape[0])

        def prefix_allowed_tokens(batch_id, sequence):
            allowed = allowed_tokens(sequence[prompt_width:].tolist())
            return every_token if allowed is None else allowed
        return prefix_allowed_tokens


class _SamplingOptions:
    def __init__(self, do_sample, temperature, top_p, generator):
        if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.generator = generator


def sample_next_tokens(logits, options):
    """Next token per row from fp32 logits [rows, vocab]: argmax, or HF's temperature then top-p sampling."""
    if not options.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / options.temperature, dim=-1)
    return _sample_top_p(probs, options.top_p, options.generator)


def _sample_top_p(probs, top_p, generator):
    """Top-p sampling without sorting the vocabulary: draw from the whole distribution and redraw the rows whose
    token fell outside the nucleus. Conditioned on acceptance this is exactly the renormalised nucleus, and a row
    is accepted with probability >= ``top_p``. Rows still outside after a few rounds (a tiny ``top_p``) are drawn
    from their explicit nucleus. (Sorting 32 x 49k probabilities cost ~40 ms per decoding step on 2 cores.)"""
    tokens = _sample_categorical(probs, generator)
    if top_p >= 1.0:
        return tokens
    pending = (~_in_nucleus(probs, tokens, top_p)).nonzero().squeeze(1)
    for _ in range(_NUCLEUS_REDRAWS):
        if len(pending) == 0:
            return tokens
        tokens[pending] = _sample_categorical(probs[pending], generator)
        pending = pending[~_in_nucleus(probs[pending], tokens[pending], top_p)]
    if len(pending):
        weights, indices = _top_p_candidates(probs[pending], top_p)
        tokens[pending] = indices.gather(1, _sample_categorical(weights, generator)[:, None]).squeeze(1)
    return tokens


def _sample_categorical(weights, generator):
    """One draw per row from unnormalised non-negative weights, by inverting the cumulative sum (several times
    cheaper than ``torch.multinomial`` over a large vocabulary here)."""
    cumulative = weights.cumsum(dim=-1)
    uniform = torch.rand(weights.shape[0], 1, generator=generator) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, uniform, right=True).clamp_(max=weights.shape[-1] - 1).squeeze(1)


def _in_nucleus(probs, tokens, top_p):
    """HF's top-p rule for the given token of each row: kept when the mass of strictly more likely tokens is below
    ``top_p`` (tokens tied at the boundary are all kept, where a sort would keep an arbitrary part of them)."""
    token_probs = probs.gather(1, tokens[:, None])
    mass_above = torch.where(probs > token_probs, probs, 0.0).sum(dim=-1)
    return mass_above < top_p


def _top_p_candidates(probs, top_p):
    """Unnormalised weights and token ids of each row's nucleus, the smallest set of most likely tokens whose mass
    reaches ``top_p`` (HF's rule: a token is kept when the mass strictly before it, in descending order, is below
    ``top_p``). A partial top-k instead of a full vocabulary sort: k grows only while some nucleus is larger."""
    k = min(_TOP_P_CANDIDATES, probs.shape[-1])
    while True:
        values, indices = probs.topk(k, dim=-1)
        if k == probs.shape[-1] or bool((values.sum(dim=-1) >= top_p).all()):
            break
        k = min(k * 16, probs.shape[-1]) if k < _TOP_P_CANDIDATES * 16 else probs.shape[-1]  # big k: a sort is cheaper
    mass_before = values.cumsum(dim=-1) - values
    keep = mass_before < top_p
    keep[:, 0] = True
    return values * keep, indices


class _Stopper:
    """EOS and stop-string detection, incrementally during decoding and as a final cut."""

    def __init__(self, tokenizer, eos_token_ids, stop_strings):
        self.tokenizer = tokenizer
        self.eos = set(eos_token_ids)
        self.stop_strings = [s for s in stop_strings if s]
        # every token decodes to at least one character, so this many trailing tokens cover any stop string
        self.window = max((len(s) for s in self.stop_strings), default=0) + 1

    def is_done(self, tokens):
        """Whether the last token of ``tokens`` ends the completion."""
        if tokens[-1] in self.eos:
            return True
        if not self.stop_strings:
            return False
        tail = self.tokenizer.decode(tokens[-self.window:])
        return any(s in tail for s in self.stop_strings)

    def cut(self, tokens):
        """Tokens before the first EOS, or through the token that completes the first stop string."""
        end = next((n for n, token in enumerate(tokens) if token in self.eos), len(tokens))
        tokens = tokens[:end]
        if not self._has_stop(tokens):
            return tokens
        low, high = 1, len(tokens)  # binary search: decoded prefixes only grow, so "has a stop string" is monotone
        while low < high:
            middle = (low + high) // 2
            if self._has_stop(tokens[:middle]):
                high = middle
            else:
                low = middle + 1
        return tokens[:low]

    def _has_stop(self, tokens):
        if not self.stop_strings or not tokens:
            return False
        text = self.tokenizer.decode(tokens)
        return any(s in text for s in self.stop_strings)


class _FastDecoder:
    """Prefill and decode for a Llama-family causal LM with a static KV cache, via the model's own submodules."""

    def __init__(self, causal_lm):
        self.backbone = causal_lm.model
        self.lm_head = causal_lm.get_output_embeddings()
        attention = self.backbone.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.scaling = attention.scaling
        self.num_kv_heads = causal_lm.config.num_key_value_heads
        self.dtype = self.backbone.embed_tokens.weight.dtype
        self.projections = [_LayerProjections(layer) for layer in self.backbone.layers]

    def generate(self, unique_prompts, row_prompt, max_new_tokens, min_new_tokens, options, stopper, allowed_tokens):
        """Completions for rows ``row_prompt`` (indices into ``unique_prompts``), not yet cut at EOS/stop strings."""
        shared = _shared_prefix_length(unique_prompts)
        input_ids, attention_mask = _left_pad([p[shared:] for p in unique_prompts], 0)
        cache = _KVCache(len(self.backbone.layers), len(unique_prompts), self.num_kv_heads,
                         shared + input_ids.shape[1] + max_new_tokens, self.head_dim, self.dtype)
        if shared:
            self._prefill_shared(unique_prompts[0][:shared], cache)
        logits = self._prefill(input_ids, attention_mask, cache)
        rows = torch.tensor(row_prompt)
        if row_prompt != list(range(len(unique_prompts))):
            cache.select(rows)
            logits = logits[rows]
        positions = shared + attention_mask[rows].sum(dim=1)  # next position of each row (padding is not counted)

        completions = [[] for _ in row_prompt]
        finished = [False] * len(row_prompt)
        alive = list(range(len(row_prompt)))  # batch slot -> completion index
        for step in range(max_new_tokens):
            if step < min_new_tokens and stopper.eos:
                logits[:, sorted(stopper.eos)] = -math.inf
            if allowed_tokens is not None:
                logits = _constrain(logits, [None if finished[index] else allowed_tokens(completions[index])
                                             for index in alive])
            tokens = sample_next_tokens(logits, options)
            for slot, token in enumerate(tokens.tolist()):
                index = alive[slot]
                if not finished[index]:  # finished rows stay in the batch until the next compaction
                    completions[index].append(token)
                    finished[index] = stopper.is_done(completions[index])
            running = [slot for slot, index in enumerate(alive) if not finished[index]]
            if not running or step == max_new_tokens - 1:
                break
            if (len(alive) - len(running)) * _COMPACT_FRACTION >= len(alive):
                keep = torch.tensor(running)
                cache.select(keep)
                tokens, positions = tokens[keep], positions[keep]
                alive = [alive[slot] for slot in running]
            logits = self._decode(tokens, positions, cache)
            positions = positions + 1
        return completions

    def _prefill_shared(self, prefix, cache):
        """Runs the prefix that all prompts of the batch share once and copies its keys/values to every row.

        Each row's own part then follows it in the cache, left-padded: [shared prefix][padding][own tokens].
        """
        prefix_cache = _KVCache(len(self.backbone.layers), 1, self.num_kv_heads, len(prefix), self.head_dim,
                                self.dtype)
        self._prefill(torch.tensor([prefix]), torch.ones(1, len(prefix), dtype=torch.long), prefix_cache)
        cache.copy_prefix(prefix_cache)

    def _prefill(self, input_ids, attention_mask, cache):
        """Runs left-padded tokens after what the cache already holds; returns fp32 logits of each row's last token.

        Rows go through in chunks of about ``_PREFILL_CHUNK_TOKENS`` tokens; each chunk writes its own cache rows."""
        rows_per_chunk = max(1, _PREFILL_CHUNK_TOKENS // input_ids.shape[1])
        logits = [self._prefill_rows(input_ids[first:first + rows_per_chunk],
                                     attention_mask[first:first + rows_per_chunk],
                                     cache.row_view(first, first + rows_per_chunk))
                  for first in range(0, input_ids.shape[0], rows_per_chunk)]
        cache.length += input_ids.shape[1]
        return torch.cat(logits)

    def _prefill_rows(self, input_ids, attention_mask, cache):
        batch, length = input_ids.shape
        start = cache.length
        positions = start + (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        cache.key_mask[:, start:start + length] = attention_mask.bool()
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        # padding keys are hidden; each padding query sees itself so that its (unused) softmax row is not empty
        own = causal & attention_mask.bool()[:, None, None, :] | torch.eye(length, dtype=torch.bool)
        mask = torch.cat([cache.key_mask[:, None, None, :start].expand(batch, 1, length, start), own], dim=-1)
        hidden = self.backbone.embed_tokens(input_ids)
        rotary = self.backbone.rotary_emb(hidden, positions)
        for layer_index, layer in enumerate(self.backbone.layers):
            hidden = self._layer(layer, hidden, rotary, mask, cache, layer_index, slice(start, start + length))
        return self._logits(hidden[:, -1])

    def _decode(self, tokens, positions, cache):
        """One step for every row: appends the tokens at ``cache.length`` and returns fp32 next-token logits."""
        hidden = self.backbone.embed_tokens(tokens[:, None])
        rotary = self.backbone.rotary_emb(hidden, positions[:, None])
        step = cache.length
        cache.key_mask[:, step] = True
        mask = cache.key_mask[:, None, None, :step + 1]
        for layer_index, layer in enumerate(self.backbone.layers):
            hidden = self._layer(layer, hidden, rotary, mask, cache, layer_index, slice(step, step + 1))
        cache.length = step + 1
        return self._logits(hidden[:, -1])

    def _layer(self, layer, hidden, rotary, mask, cache, layer_index, span):
        """One decoder layer; the new keys/values go to ``span`` of the cache, attention reads ``[0, span.stop)``."""
        projections = self.projections[layer_index]
        batch, length, _ = hidden.shape
        q, k, v = projections.qkv(layer.input_layernorm(hidden))
        q = q.view(batch, length, -1, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, -1, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, -1, self.head_dim).transpose(1, 2)
        q, k = _apply_rotary(q, k, *rotary)
        keys, values = cache.keys[layer_index], cache.values[layer_index]
        keys[:, :, span] = k
        values[:, :, span] = v
        keys, values = keys[:, :, :span.stop], values[:, :, :span.stop]
        if length == 1:
            # decoding: the query heads of one key/value head become that head's queries, so the cache is read
            # once per key/value head instead of once per query head (what ``enable_gqa`` does)
            grouped = q.reshape(batch, self.num_kv_heads, -1, self.head_dim)
            out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=self.scaling)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=True)
        hidden = hidden + projections.o(out.reshape(batch, -1, length, self.head_dim).transpose(1, 2)
                                        .reshape(batch, length, -1))[0]
        return hidden + projections.mlp(layer.post_attention_layernorm(hidden))

    def _logits(self, last_hidden):
        return self.lm_head(self.backbone.norm(last_hidden)).float()


class _LayerProjections:
    """A decoder layer's linear projections, fused where they read the same input: q/k/v and gate/up.

    Measured on 2 cores (README, "Speed on CPU"): with a LoRA adapter active this beat PEFT's per-module calls
    (164 vs 149 tokens/s), but for a plain model at batch 32 the session-2 engine with separate projections was
    faster (273 vs 249 tokens/s, interleaved A/B): fusing only layers with adapters is the open next step."""

    def __init__(self, layer):
        attention, mlp = layer.self_attn, layer.mlp
        self.qkv = _FusedLinear([attention.q_proj, attention.k_proj, attention.v_proj])
        self.o = _FusedLinear([attention.o_proj])
        self._mlp = mlp
        self._gated = all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
        if self._gated:
            self.gate_up = _FusedLinear([mlp.gate_proj, mlp.up_proj])
            self.down = _FusedLinear([mlp.down_proj])

    def mlp(self, x):
        if not self._gated:
            return self._mlp(x)
        gate, up = self.gate_up(x)
        return self.down(self._mlp.act_fn(gate) * up)[0]


class _FusedLinear:
    """Linear layers that read the same input, run as one matmul; returns their outputs as a tuple.

    A PEFT LoRA layer contributes its base weight to the matmul and its active adapters to one low-rank product
    ``x A^T B^T`` (A stacked, B block-diagonal with each adapter's scaling folded in), computed in the adapters'
    dtype and added before casting back, as PEFT does. Layers of any other kind are called one by one."""

    def __init__(self, modules):
        parts = [_linear_parts(module) for module in modules]
        if not all(parts):
            self.modules = modules
            return
        self.modules = None
        bases = [base for base, _ in parts]
        self.sizes = [base.out_features for base in bases]
        self.weight = bases[0].weight if len(bases) == 1 else torch.cat([b.weight for b in bases])
        self.bias = None
        if any(b.bias is not None for b in bases):
            self.bias = torch.cat([b.bias if b.bias is not None else b.weight.new_zeros(b.out_features)
                                   for b in bases])
        self.low_rank = _stack_adapters([adapters for _, adapters in parts], self.sizes)

    def __call__(self, x):
        if self.modules is not None:
            return tuple(module(x) for module in self.modules)
        out = F.linear(x, self.weight, self.bias)
        if self.low_rank is not None:
            a, b = self.low_rank
            out = (out + F.linear(F.linear(x.to(a.dtype), a), b)).to(out.dtype)
        return out.split(self.sizes, dim=-1)


def _linear_parts(module):
    """``(base nn.Linear, [(A, B, scaling), ...])`` for a plain or vanilla-LoRA linear layer, else None."""
    if type(module) is torch.nn.Linear:
        return module, []
    if not isinstance(module, LoraLinear) or type(module.base_layer) is not torch.nn.Linear:
        return None
    if module.disable_adapters:
        return None if module.merged else (module.base_layer, [])  # PEFT unmerges merged weights here
    if module.merged:
        return module.base_layer, []
    adapters = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if name in module.lora_variant or module.lora_B[name].bias is not None:
            return None  # DoRA and other variants, LoRA biases: the module computes them itself
        adapters.append((module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]))
    return module.base_layer, adapters


def _stack_adapters(adapters_per_module, out_sizes):
    """``(A, B)`` with ``x A^T B^T`` = the sum of every module's scaled LoRA updates at its output columns."""
    flat = [(row, adapter) for row, adapters in enumerate(adapters_per_module) for adapter in adapters]
    if not flat:
        return None
    a = torch.cat([lora_a for _, (lora_a, _, _) in flat])
    b = a.new_zeros(sum(out_sizes), a.shape[0])
    starts = [sum(out_sizes[:row]) for row in range(len(out_sizes))]
    rank_start = 0
    for row, (lora_a, lora_b, scaling) in flat:
        rank = lora_a.shape[0]
        b[starts[row]:starts[row] + out_sizes[row], rank_start:rank_start + rank] = lora_b.to(a.dtype) * scaling
        rank_start += rank
    return a, b


class _KVCache:
    """Preallocated keys/values [rows, kv heads, capacity, head dim] per layer, plus which positions are real."""

    def __init__(self, num_layers, rows, num_kv_heads, capacity, head_dim, dtype):
        shape = (rows, num_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype) for _ in range(num_layers)]
        self.key_mask = torch.zeros(rows, capacity, dtype=torch.bool)
        self.length = 0

    def select(self, rows):
        """Keeps (or repeats) the given rows, copying only the filled part of the cache."""
        filled = max(self.length, 1)
        for cache in (self.keys, self.values):
            for i, tensor in enumerate(cache):
                selected = torch.empty((len(rows),) + tensor.shape[1:], dtype=tensor.dtype)
                selected[:, :, :filled] = tensor[rows, :, :filled]
                cache[i] = selected
        self.key_mask = self.key_mask[rows]

    def row_view(self, first, stop):
        """A cache over rows ``[first, stop)`` that shares this one's storage (writes land here)."""
        view = _KVCache.__new__(_KVCache)
        view.keys = [tensor[first:stop] for tensor in self.keys]
        view.values = [tensor[first:stop] for tensor in self.values]
        view.key_mask = self.key_mask[first:stop]
        view.length = self.length
        return view

    def copy_prefix(self, prefix):
        """Puts a one-row cache's contents at the start of every row."""
        for own, shared in zip(self.keys + self.values, prefix.keys + prefix.values):
            own[:, :, :prefix.length] = shared[:, :, :prefix.length]
        self.key_mask[:, :prefix.length] = True
        self.length = prefix.length


def _constrain(logits, allowed_per_row):
    """``logits`` with every token outside a row's allowed ids at -inf (rows with None are left as they are)."""
    if all(allowed is None for allowed in allowed_per_row):
        return logits
    mask = torch.zeros_like(logits)
    for row, allowed in enumerate(allowed_per_row):
        if allowed is not None:
            mask[row] = -math.inf
            mask[row, allowed] = 0
    return logits + mask


def _apply_rotary(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _shared_prefix_length(prompts):
    """Tokens that all prompts share at the start (the chat template and instruction), worth computing once.
    Every prompt keeps at least one token of its own, whose logits start its completion."""
    if len(prompts) < 2:
        return 0
    shared = min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)
    return shared if shared >= _MIN_SHARED_PREFIX else 0


def _restore_order(completions, num_prompts, num_return_sequences):
    """(prompt index, tokens) pairs in batch order -> prompt0-seq0, prompt0-seq1, ..., prompt1-seq0, ..."""
    by_prompt = [[] for _ in range(num_prompts)]
    for prompt_index, tokens in completions:
        by_prompt[prompt_index].append(tokens)
    assert all(len(seqs) == num_return_sequences for seqs in by_prompt)
    return [tokens for seqs in by_prompt for tokens in seqs]


def _left_pad(sequences, pad_id):
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, length - len(seq):] = torch.tensor(seq)
        attention_mask[row, length - len(seq):] = 1
    return input_ids, attention_mask


def _pad_token_id(tokenizer, eos_token_ids):
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return eos_token_ids[0] if eos_token_ids else 0


_FULL_ATTENTION_TYPES = ("llama", "qwen2", "mistral")


def _fast_decoder_model(model):
    """The plain HF causal LM under ``model`` if the fast path supports it (LoRA-style PEFT included), else None."""
    if hasattr(model, "get_base_model"):  # PEFT
        if model.active_peft_config.is_prompt_learning:
            return None  # virtual prompt tokens live outside the decoder's own modules
        model = model.get_base_model()
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in _FULL_ATTENTION_TYPES or not hasattr(model, "model"):
        return None
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return None
    if config.model_type == "mistral" and config.sliding_window is not None:
        return None
    return model


@contextmanager
def _eval_mode(model):
    """Eval mode (no dropout) while generating; the caller's train/eval state comes back afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)
