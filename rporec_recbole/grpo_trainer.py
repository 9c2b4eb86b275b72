"""Stage 2 of RPORec: GRPO on the LLM, rewarded through the frozen stage-1 RecHead (TRL's GRPOTrainer, pared down).

One step: the step's training prompts -> ``num_generations`` sampled completions each -> rewards -> group
advantages -> the clipped GRPO loss of ``grpo.py`` over micro-batches -> one optimizer step (``num_iterations``
optimizer steps on the same rollouts when > 1, the later ones importance-weighted by the rollout log-probs).

Decisions:
- Under ``accelerate launch`` each process takes a contiguous slice of the step's prompts (a prompt's completions
  stay on one process, so advantages are local). Each micro-batch loss is scaled by its share of the GLOBAL
  normaliser (sequences for grpo/dr_grpo, tokens for dapo) times the process count, so DDP's gradient average is
  exactly the update one process makes on the whole batch. The top-entropy threshold is taken over the whole
  global batch (TRL: per micro-batch), so it does not depend on how the batch is split either.
- The KL reference is the policy with its LoRA adapter disabled (no second copy), or a frozen copy when the whole
  model is trained (whose trainable weights are then kept in float32: bf16 cannot hold updates of lr 1e-6). The
  reference also writes the summaries of the compression reward, greedily.
- The completion includes its EOS token when it ended by itself, so the policy also learns when to stop.
- A step whose rewards, loss or gradients are not finite changes nothing (no optimizer step) and is logged;
  ``max_nonfinite_steps`` of them in a row end the stage early with the last good weights.
"""
import copy
import hashlib
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import yaml
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file

from rporec_recbole.answer_forcing import generate_with_forced_answer
from rporec_recbole.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from rporec_recbole.cpu_allocator import HeapTrimmer
from rporec_recbole.generation import GenerationEngine
from rporec_recbole.grpo import entropy_mask, group_advantages, grpo_loss
from rporec_recbole.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, parse_output
from rporec_recbole.rewards import (
    REWARD_COMPONENTS, RewardWeights, compression_reward, entropy_reward, format_reward, length_reward, rank_reward,
    similarity_reward, token_entropies, total_reward,
)
from rporec_recbole.timing import resident_mb

SUMMARY_REQUEST = ("Condense the following reasoning into one short sentence that keeps its conclusion. "
                   "Reply with the summary only.\n\nReasoning:\n{reasoning}")


@dataclass(frozen=True)
class GRPOSettings:
    """Stage-2 hyper-parameters; ``from_config`` reads each one from the ``rl_<name>`` config key."""

    steps: int = 10
    prompts_per_step: int = 1
    num_generations: int = 4
    max_completion_length: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.001
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    top_entropy_quantile: float = 0.2
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: tuple = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_nonfinite_steps: int = 3
    summary_max_tokens: int = 48
    generation_batch_size: int = 32
    seed: int = 2020
    force_answer: bool = False  # shared with the reasoning store: see answer_forcing.py
    answer_max_new_tokens: int = 32

    # keys that stage 2 shares with reasoning generation (no ``rl_`` prefix)
    SHARED_KEYS = ("seed", "generation_batch_size", "force_answer", "answer_max_new_tokens")

    @classmethod
    def from_config(cls, config):
        own = [f.name for f in fields(cls) if f.name not in cls.SHARED_KEYS]
        values = {name: config[f"rl_{name}"] for name in own if config[f"rl_{name}"] is not None}
        values.update({name: config[name] for name in cls.SHARED_KEYS})
        if "lora_target_modules" in values:
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        return cls(**values)

    def check(self, num_processes):
        local_completions, leftover = divmod(self.prompts_per_step * self.num_generations, num_processes)
        if self.prompts_per_step % num_processes or local_completions % self.gradient_accumulation_steps:
            raise ValueError(
                f"rl_prompts_per_step={self.prompts_per_step} must split evenly over {num_processes} processes, "
                f"and each process's {local_completions} completions into "
                f"rl_gradient_accumulation_steps={self.gradient_accumulation_steps} micro-batches")


# ----- batches ---------------------------------------------------------------------------------------------------
@dataclass
class PolicyInputs:
    """Prompts left-padded and completions right-padded into one batch; ``completion_mask`` covers the completions."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor

    def rows(self, index):
        return PolicyInputs(self.input_ids[index], self.attention_mask[index], self.position_ids[index],
                            self.completion_mask[index])


def collate(prompt_ids, completion_ids, pad_id, forced=None):
    """``PolicyInputs`` for one completion per row (rows repeat their prompt). ``forced`` (per row, a flag per
    completion token) marks appended tokens (answer forcing): they stay in the input but out of
    ``completion_mask``, so no loss term."""
    prompt_length = max(len(p) for p in prompt_ids)
    completion_length = max(1, max(len(c) for c in completion_ids))
    rows = len(prompt_ids)
    input_ids = torch.full((rows, prompt_length + completion_length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
        start = prompt_length - len(prompt)
        input_ids[row, start:prompt_length + len(completion)] = torch.tensor(prompt + completion)
        attention_mask[row, start:prompt_length + len(completion)] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # as in generation, padding not counted
    completion_mask = attention_mask[:, prompt_length:].clone()
    for row, flags in enumerate(forced or []):
        completion_mask[row, :len(flags)].masked_fill_(torch.tensor(flags, dtype=torch.bool), 0)
    return PolicyInputs(input_ids, attention_mask, position_ids, completion_mask)


def completion_logps(model, inputs, temperature=1.0, with_entropies=False):
    """Per-token log-probabilities of the completion tokens under ``model`` (and their entropies): (N, T) each."""
    length = inputs.completion_mask.shape[1]
    logits = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                   position_ids=inputs.position_ids, logits_to_keep=length + 1).logits[:, :-1]
    logits = logits.float() / temperature
    targets = inputs.input_ids[:, -length:].unsqueeze(-1)
    logps = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(dim=-1)
    return (logps, token_entropies(logits.detach())) if with_entropies else logps


@dataclass
class RolloutBatch:
    """One process's share of a step: completions laid out prompt by prompt, and what the loss needs of them."""

    inputs: PolicyInputs
    advantages: torch.Tensor
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    entropy_mask: torch.Tensor | None

    def __len__(self):
        return len(self.advantages)

    def split(self, count):
        size = len(self) // count
        return [self.rows(slice(start, start + size)) for start in range(0, len(self), size)]

    def rows(self, index):
        return RolloutBatch(self.inputs.rows(index), self.advantages[index], _rows(self.old_logps, index),
                            _rows(self.ref_logps, index), _rows(self.entropy_mask, index))


def _rows(tensor, index):
    return None if tensor is None else tensor[index]


@dataclass
class Completions:
    """What a reward function sees: per completion, its prompt's sample, its text, token ids and token entropies."""

    samples: list
    texts: list
    token_ids: list
    entropies: list


# ----- policy and reference --------------------------------------------------------------------------------------
class PolicyPair:
    """The trainable policy and the frozen reference it is compared with (see the module docstring)."""

    def __init__(self, base_model, settings):
        self.lora = settings.lora
        self.describe = repr((settings.lora, settings.lora_r, settings.lora_alpha, settings.lora_target_modules))
        if self.lora:
            config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                                target_modules=list(settings.lora_target_modules), task_type="CAUSAL_LM")
            self.policy = get_peft_model(base_model, config)
            self._reference = None
        else:
            self._reference = copy.deepcopy(base_model).requires_grad_(False).eval()
            self.policy = base_model.float().requires_grad_(True)
        if settings.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.policy.train()

    def trainable_parameters(self):
        return [p for p in self.policy.parameters() if p.requires_grad]

    @contextmanager
    def reference(self):
        """The reference model, valid inside the block."""
        if self._reference is not None:
            yield self._reference
        else:
            with self.policy.disable_adapter():
                yield self.policy

    def fingerprint(self):
        """A short hash of the trainable weights: names the tuned policy (e.g. in the reasoning store)."""
        digest = hashlib.sha256(self.describe.encode())  # the LoRA scale is not in the weights
        for name, param in self.policy.named_parameters():
            if param.requires_grad:
                digest.update(name.encode())
                digest.update(param.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save(self, folder):
        """The LoRA adapter, or the full weights, as safetensors with their HF/PEFT config."""
        self.policy.save_pretrained(folder, safe_serialization=True)

    def load(self, folder):
        if self.lora:
            set_peft_model_state_dict(self.policy, load_file(os.path.join(folder, "adapter_model.safetensors")))
            return
        missing, unexpected = self.policy.load_state_dict(load_file(os.path.join(folder, "model.safetensors")),
                                                          strict=False)
        tied = set(getattr(self.policy, "_tied_weights_keys", None) or [])
        if unexpected or set(missing) - tied:
            raise ValueError(f"policy weights in {folder} do not fit: missing {missing}, unexpected {unexpected}")


# ----- the trainer -----------------------------------------------------------------------------------------------
class GRPOTrainer:
    """Generate-and-score, then the loss: TRL's GRPO loop on one HF causal LM, for 1 or N Accelerate processes."""

    def __init__(self, model, tokenizer, settings, accelerator, answer_constraint=None):
        settings.check(accelerator.num_processes)
        self.settings = settings
        self.answer_constraint = answer_constraint  # an ItemAnswerTrie: forced answers are item texts
        self.tokenizer = tokenizer
        self.accelerator = accelerator
        self.pair = PolicyPair(model, settings)
        optimizer = torch.optim.AdamW(self.pair.trainable_parameters(), lr=settings.learning_rate,
                                      weight_decay=settings.weight_decay)
        self.policy, self.optimizer = accelerator.prepare(self.pair.policy, optimizer)
        self.engine = GenerationEngine(self.pair.policy, tokenizer, max_batch_size=settings.generation_batch_size)
        self.step = 0
        self.nonfinite_in_a_row = 0

    # generation
    def generate(self, prompts):
        """``num_generations`` sampled completions per prompt: (prompt ids, completion ids to train on, their
        forced-token flags or None, texts, completion ids as generated). Without answer forcing a completion that
        ended before the budget gets its EOS back (TRL trains on it); a forced one ends with ``</answer>``."""
        s = self.settings
        prompt_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        # seeded by (seed, step, process): a resumed run draws the same rollouts again
        rollout_seed = (s.seed * 1_000_003 + self.step) * 1_009 + self.accelerator.process_index
        generator = torch.Generator().manual_seed(rollout_seed)
        sampling = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, generator=generator)
        if s.force_answer:
            forced_completions = generate_with_forced_answer(self.engine, prompt_ids, s.max_completion_length,
                                                             s.answer_max_new_tokens, s.num_generations,
                                                             answer_constraint=self.answer_constraint, **sampling)
            completions = [c.token_ids for c in forced_completions]
            trained, forced = completions, [c.forced for c in forced_completions]
        else:
            completions = self.engine.generate_ids(prompt_ids, max_new_tokens=s.max_completion_length,
                                                   num_return_sequences=s.num_generations, **sampling)
            eos = self.engine.eos_token_ids[:1]
            trained, forced = [c + eos if len(c) < s.max_completion_length else c for c in completions], None
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return [p for p in prompt_ids for _ in range(s.num_generations)], trained, forced, texts, completions

    def summarize(self, reasonings):
        """One-sentence summaries of ``reasonings`` written greedily by the reference model."""
        if not reasonings:
            return []
        requests = [[{"role": "user", "content": SUMMARY_REQUEST.format(reasoning=r)}] for r in reasonings]
        prompts = [self.tokenizer.apply_chat_template(request, tokenize=False, add_generation_prompt=True) + ANSWER_OPEN
                   for request in requests]
        with self.pair.reference() as reference:
            engine = GenerationEngine(reference, self.tokenizer, max_batch_size=self.settings.generation_batch_size)
            outputs = engine.generate(prompts, max_new_tokens=self.settings.summary_max_tokens, do_sample=False,
                                      stop_strings=[ANSWER_CLOSE])
        return [o.split(ANSWER_CLOSE)[0].strip() for o in outputs]

    # scoring
    @torch.no_grad()
    def generate_and_score(self, prompts, samples, reward_fn):
        """Rollouts of this process's prompts, their rewards and the ``RolloutBatch`` the loss trains on."""
        prompt_ids, completion_ids, forced, texts, token_ids = self.generate(prompts)
        inputs = collate(prompt_ids, completion_ids, self.tokenizer.pad_token_id, forced)
        with self.accelerator.autocast():
            old_logps, entropies = completion_logps(self.pair.policy, inputs, self.settings.temperature, True)
        repeated = [sample for sample in samples for _ in range(self.settings.num_generations)]
        completions = Completions(repeated, texts, token_ids, [entropies[i, :len(t)] for i, t in enumerate(token_ids)])
        rewards, components = reward_fn(completions)
        batch = self.rollout_batch(inputs, rewards, old_logps, entropies)
        mask = inputs.completion_mask
        stats = {"entropy": float((entropies * mask).sum() / mask.sum().clamp(min=1)),
                 "completion_length": float(mask.sum(dim=1).float().mean())}
        return batch, rewards, components, stats

    @torch.no_grad()
    def rollout_batch(self, inputs, rewards, old_logps, entropies):
        """Reference log-probs, advantages and the top-entropy mask for scored rollouts."""
        s = self.settings
        ref_logps = None
        if s.beta != 0.0:
            with self.pair.reference() as reference, self.accelerator.autocast():
                ref_logps = completion_logps(reference, inputs, s.temperature)
        advantages = group_advantages(rewards.float(), s.num_generations, scale=s.scale_rewards)
        mask = None
        if s.top_entropy_quantile < 1.0:
            mask = self.global_entropy_mask(entropies, inputs.completion_mask)
        return RolloutBatch(inputs, advantages, old_logps if s.num_iterations > 1 else None, ref_logps, mask)

    def global_entropy_mask(self, entropies, completion_mask):
        """``entropy_mask`` with its threshold over the valid tokens of every process's rollouts."""
        acc = self.accelerator
        all_entropies = acc.gather(acc.pad_across_processes(entropies, dim=1))
        all_masks = acc.gather(acc.pad_across_processes(completion_mask, dim=1))
        mask = entropy_mask(all_entropies, all_masks, self.settings.top_entropy_quantile)
        start = acc.process_index * len(entropies)
        return mask[start:start + len(entropies), :entropies.shape[1]]

    # the loss
    def compute_loss(self, micro, share):
        s = self.settings
        with self.accelerator.autocast():
            logps = completion_logps(self.policy, micro.inputs, s.temperature)
        loss, metrics = grpo_loss(logps, micro.old_logps, micro.ref_logps, micro.advantages,
                                  micro.inputs.completion_mask, s.beta, s.epsilon, s.epsilon_high, s.loss_type,
                                  s.max_completion_length, micro.entropy_mask)
        return loss * share, metrics

    def _shares(self, micro_batches):
        """Each micro-batch's weight: its part of the global normaliser, times the process count (DDP averages)."""
        by_tokens = self.settings.loss_type == "dapo"
        counts = [float(m.inputs.completion_mask.sum()) if by_tokens else float(len(m)) for m in micro_batches]
        total = float(self.accelerator.reduce(torch.tensor(sum(counts)), reduction="sum"))
        return [count / max(total, 1.0) * self.accelerator.num_processes for count in counts]

    def optimise(self, batch):
        """``num_iterations`` optimizer steps on one rollout batch; returns the loss metrics, or None when skipped."""
        s = self.settings
        micro_batches = batch.split(s.gradient_accumulation_steps)
        shares = self._shares(micro_batches)
        params = self.pair.trainable_parameters()
        history = []
        for _ in range(s.num_iterations):
            metrics, loss_sum = [], 0.0
            for index, (micro, share) in enumerate(zip(micro_batches, shares)):
                last = index == len(micro_batches) - 1
                with nullcontext() if last else self.accelerator.no_sync(self.policy):
                    loss, micro_metrics = self.compute_loss(micro, share)
                    self.accelerator.backward(loss)
                loss_sum += float(loss.detach())
                metrics.append(micro_metrics)
            grad_norm = self.accelerator.clip_grad_norm_(params, s.max_grad_norm or math.inf)
            loss_total = float(self.accelerator.reduce(torch.tensor(loss_sum), reduction="sum"))
            if not (math.isfinite(loss_total) and math.isfinite(float(grad_norm))):
                self.optimizer.zero_grad()
                return None
            self.optimizer.step()
            self.optimizer.zero_grad()
            history.append({"loss": loss_total / self.accelerator.num_processes, "grad_norm": float(grad_norm),
                            **{k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}})
        return {k: float(np.mean([h[k] for h in history])) for k in history[0]}

    def train_step(self, prompts, samples, reward_fn):
        """One GRPO step on this process's ``prompts``; every metric is averaged over all processes."""
        start = time.time()
        batch, rewards, components, stats = self.generate_and_score(prompts, samples, reward_fn)
        rewards_finite = bool(self.accelerator.reduce(torch.tensor(float(torch.isfinite(rewards).all())),
                                                      reduction="sum") == self.accelerator.num_processes)
        loss_metrics = self.optimise(batch) if rewards_finite else None
        self.step += 1
        self.nonfinite_in_a_row = 0 if loss_metrics is not None else self.nonfinite_in_a_row + 1
        local = {"reward": rewards.float().nanmean(), "reward_std": rewards.float().std(),
                 **{f"reward/{k}": v.float().mean() for k, v in components.items()},
                 **{k: torch.tensor(v) for k, v in {**stats, **(loss_metrics or {})}.items()}}
        names = sorted(local)
        averaged = self.accelerator.reduce(torch.stack([local[n].float() for n in names]), reduction="mean")
        metrics = {n: float(v) for n, v in zip(names, averaged)}
        metrics.update(step=self.step, skipped=loss_metrics is None, seconds=time.time() - start)
        return metrics

    def state(self):
        return {"step": self.step, "nonfinite_in_a_row": self.nonfinite_in_a_row, "policy": self.pair.fingerprint(),
                "lora": self.settings.lora}


# ----- RPORec wiring: prompts from training samples, rewards from the RecHead -----------------------------------------
class TrainingPrompts:
    """RL prompts: the latest ``per_user`` TRAINING samples of each user (never valid/test), in a seeded order."""

    def __init__(self, rec_model, train_data, per_user, seed):
        from rporec_recbole.trainer import latest_samples

        feat = train_data._dataset.inter_feat
        rows = latest_samples(train_data._dataset, rec_model.ITEM_SEQ_LEN, per_user)
        self.rec_model = rec_model
        self.item_seq = feat[rec_model.ITEM_SEQ][rows]
        self.item_seq_len = feat[rec_model.ITEM_SEQ_LEN][rows]
        self.targets = feat[rec_model.POS_ITEM_ID][rows]
        self.seed = seed

    def __len__(self):
        return len(self.targets)

    def for_step(self, step, count):
        """Sample indices of a step: consecutive slices of seeded permutations, so a resumed run continues them."""
        first = step * count
        out = []
        for position in range(first, first + count):
            epoch, offset = divmod(position, len(self))
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed * 7_919 + epoch))
            out.append(int(order[offset]))
        return out

    def prompts(self, samples):
        windows = self.rec_model.windows(self.item_seq[samples], self.item_seq_len[samples])
        return [self.rec_model.prompts.build(w) for w in windows]


def reasoning_token_mask(tokenizer, token_ids):
    """True for the completion tokens before the one that starts ``</think>`` (all of them if it never closes)."""
    pieces = tokenizer.batch_decode([[t] for t in token_ids])
    close = "".join(pieces).find(THINK_CLOSE)
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    return torch.as_tensor(starts < close if close >= 0 else np.ones(len(pieces), dtype=bool))


class RecHeadRewards:
    """RPORec's reward of completions of training prompts: f * (base + weighted terms), every term in ``rewards.py``.

    r_rank ranks the sample's target under the frozen stage-1 model among the target and ``num_negatives`` uniform
    negatives (never the target, fixed per sample), or among all items; r_comp and r_sim compare the reasoning with
    the reference's summary of it, written only for completions whose format is ok (the others earn 0 anyway).
    """

    def __init__(self, pool, summarize, tokenizer, weights=RewardWeights(), rank_over="sampled", num_negatives=49,
                 seed=0, similarity_threshold=0.5):
        if rank_over not in ("sampled", "full"):
            raise ValueError(f"rl_rank_over={rank_over!r}: choose 'sampled' or 'full'")
        self.pool = pool
        self.model = pool.rec_model
        self.summarize = summarize
        self.tokenizer = tokenizer
        self.weights = weights
        self.rank_over = rank_over
        self.num_negatives = num_negatives
        self.seed = seed
        self.similarity_threshold = similarity_threshold

    def negatives(self, sample):
        catalogue = self.model.n_items - 2  # ids 1..n_items-1 without the target
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + sample)
        picks = torch.randperm(catalogue, generator=generator)[:self.num_negatives] + 1
        return picks + (picks >= self.pool.targets[sample]).long()

    @torch.no_grad()
    def rank_rewards(self, samples, texts):
        samples_t = torch.tensor(samples)
        pool = self.pool
        users = self.model.users_for_completions(pool.item_seq[samples_t], pool.item_seq_len[samples_t], texts)
        targets = pool.targets[samples_t]
        if self.rank_over == "full":
            scores, target_index = self.model.score(users)[:, 1:], targets - 1  # column 0 is padding
        else:
            candidates = torch.stack([torch.cat([targets[i:i + 1], self.negatives(s)]) for i, s in enumerate(samples)])
            scores, target_index = self.model.score(users, candidates), torch.zeros_like(targets)
        return [rank_reward(row, int(t)) for row, t in zip(scores.cpu(), target_index)]

    def __call__(self, completions):
        parsed = [parse_output(THINK_OPEN + text) for text in completions.texts]
        count = len(parsed)
        values = {name: [0.0] * count for name in REWARD_COMPONENTS}
        values["format"] = [format_reward(p) for p in parsed]
        values["length"] = [length_reward(p) for p in parsed]
        values["rank"] = self.rank_rewards(completions.samples, completions.texts)
        for i, (ids, entropies) in enumerate(zip(completions.token_ids, completions.entropies)):
            if ids:
                values["entropy"][i] = entropy_reward(entropies, reasoning_token_mask(self.tokenizer, ids))
        formatted = [i for i, p in enumerate(parsed) if p.format_ok]
        summaries = self.summarize([parsed[i].reasoning for i in formatted])
        if formatted:
            reasoning_emb = self.model.reasoning.pool_texts([parsed[i].reasoning for i in formatted])
            summary_emb = self.model.reasoning.pool_texts(summaries)
            for j, (i, summary) in enumerate(zip(formatted, summaries)):
                values["compression"][i] = compression_reward(summary, parsed[i].reasoning)
                values["similarity"][i] = similarity_reward(reasoning_emb[j], summary_emb[j], self.similarity_threshold)
        totals = [total_reward({name: values[name][i] for name in REWARD_COMPONENTS}, self.weights)
                  for i in range(count)]
        return torch.tensor(totals), {name: torch.tensor(v) for name, v in values.items()}


# ----- checkpoints -----------------------------------------------------------------------------------------------
def _plain(value):
    """A yaml-safe version of a config value."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def save_rl_checkpoint(folder, grpo, rec_model, config, history, progress):
    """Write ``folder`` atomically: RecHead (model.safetensors), RL optimizer, policy/ (adapter or weights),
    config.yaml and trainer_state.json (step, reward history, policy fingerprint, the run's ``progress``: training
    seconds so far, stage-1 epochs and tested epoch). Older step folders are removed."""
    tmp = f"{folder}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    grpo.pair.save(os.path.join(tmp, "policy"))
    atomic_write_bytes(os.path.join(tmp, "config.yaml"),
                       yaml.safe_dump(_plain(dict(config.final_config_dict)), sort_keys=True).encode())
    save_checkpoint(tmp, rec_model.state_dict(), grpo.optimizer, {**grpo.state(), "history": history,
                                                                  "model": config["model"], **progress})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    parent, name = os.path.split(folder)
    for other in os.listdir(parent):
        if other.startswith("step-") and other != name and ".tmp" not in other:
            shutil.rmtree(os.path.join(parent, other), ignore_errors=True)


def load_rl_checkpoint(folder, grpo, rec_model):
    """Restore RecHead, policy, optimizer and step from ``folder``; returns the checkpoint's trainer state
    (per-step ``history``, the run's progress)."""
    model_state, optimizer_state, meta = load_checkpoint(folder)
    rec_model.load_state_dict(model_state)
    grpo.pair.load(os.path.join(folder, "policy"))
    grpo.optimizer.load_state_dict(optimizer_state)
    grpo.step, grpo.nonfinite_in_a_row = meta["step"], meta["nonfinite_in_a_row"]
    if grpo.pair.fingerprint() != meta["policy"]:
        raise ValueError(f"policy weights in {folder} do not match the fingerprint recorded with them")
    return meta


# ----- the stage -------------------------------------------------------------------------------------------------
def reward_weights(config):
    return replace(RewardWeights(), **(config["rl_reward_weights"] or {}))


def run_rl_stage(trainer, train_data):
    """Stage 2 for an ``RPORecTrainer`` whose model holds the stage-1 RecHead; returns the ``GRPOTrainer``."""
    config, model, acc = trainer.config, trainer.model, trainer.accelerator
    settings = GRPOSettings.from_config(config)
    grpo = GRPOTrainer(model.backbone.model, model.backbone.tokenizer, settings, acc, model.answer_constraint)
    pool = TrainingPrompts(model, train_data, config["rl_prompts_per_user"], config["seed"])
    reward_fn = RecHeadRewards(pool, grpo.summarize, model.backbone.tokenizer, reward_weights(config),
                               config["rl_rank_over"], config["rl_rank_negatives"], config["seed"])
    history = []
    if config["rl_resume_checkpoint"]:
        state = load_rl_checkpoint(config["rl_resume_checkpoint"], grpo, model)
        history = state["history"]
        # the training time and stage-1 epochs of the processes before this one, so the run reports all of them
        trainer.restore_progress(state)
        trainer.logger.info(f"RL resumed at step {grpo.step} from {config['rl_resume_checkpoint']}")
    folder = os.path.join(config["checkpoint_dir"], os.path.basename(trainer.saved_model_file) + "-rl")
    trainer.rl_checkpoint_dir = folder
    model.eval()  # the RecHead is a frozen judge: no dropout in its scores
    heap = HeapTrimmer(config["rl_trim_heap_mb"])
    per_process = settings.prompts_per_step // acc.num_processes
    trainer.logger.info(f"RL: {settings.steps} steps x {settings.prompts_per_step} prompts x "
                        f"{settings.num_generations} completions from {len(pool)} training prompts, "
                        f"{acc.num_processes} process(es)")
    while grpo.step < settings.steps:
        samples = pool.for_step(grpo.step, settings.prompts_per_step)
        mine = samples[acc.process_index * per_process:(acc.process_index + 1) * per_process]
        metrics = grpo.train_step(pool.prompts(mine), mine, reward_fn)
        metrics["heap_trimmed"] = float(heap.after_step())
        metrics["resident_mb"] = resident_mb()
        if config["rl_eval_step"] and grpo.step % config["rl_eval_step"] == 0:
            metrics["valid_ndcg@10"] = trainer.rl_valid_ndcg()
        history.append(metrics)
        trainer.log_rl_step(metrics)
        last = grpo.step == settings.steps
        if grpo.nonfinite_in_a_row >= settings.max_nonfinite_steps:
            trainer.logger.error(f"RL stopped at step {grpo.step}: {grpo.nonfinite_in_a_row} non-finite steps in a "
                                 f"row (the policy keeps its last good weights)")
            last = True
        if acc.is_main_process and (last or grpo.step % config["rl_save_step"] == 0):
            save_rl_checkpoint(os.path.join(folder, f"step-{grpo.step:06d}"), grpo, model, config, history,
                               trainer.progress())
        acc.wait_for_everyone()
        if last:
            break
    trainer.rl_history = history
    return grpo
