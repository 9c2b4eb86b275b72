"""Two GRPO updates on fixed rollouts, for ``tests/test_accelerate.py``; run with 1 or N Accelerate processes.

    accelerate launch --multi_gpu --num_processes 2 tests/accelerate_equivalence.py OUT.safetensors --processes 2
    accelerate launch --cpu --num_processes 1 tests/accelerate_equivalence.py OUT.safetensors --accumulation 2

(``--cpu --num_processes 2`` starts ONE process in accelerate 1.15: its simple launcher only spreads CPU processes
with mpirun. ``--multi_gpu`` uses torchrun, and ``Accelerator(cpu=True)`` then joins them over gloo without GPUs.)

Every process builds the same global batch (4 prompts x 4 completions of different lengths, fixed rewards) and
trains on its own contiguous slice; the main process writes the resulting LoRA tensors. The settings exercise what
depends on the split: token-level normalisation (dapo), the top-entropy threshold, reused rollouts and the KL.
"""
import argparse

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from rporec_recbole.grpo_trainer import GRPOSettings, GRPOTrainer, collate, completion_logps
from rporec_recbole.llm import TINY_RANDOM_LLM, load_llm, load_tokenizer

PROMPTS, GENERATIONS = 4, 4


def fixed_rollouts(vocab_size):
    """Prompt ids, completion ids and rewards of the whole global batch, the same in every process."""
    generator = torch.Generator().manual_seed(0)
    prompt_ids, completion_ids = [], []
    for prompt in range(PROMPTS):
        prompt_tokens = torch.randint(vocab_size, (5 + 3 * prompt,), generator=generator).tolist()
        for completion in range(GENERATIONS):
            length = 2 + (prompt + 3 * completion) % 7
            prompt_ids.append(prompt_tokens)
            completion_ids.append(torch.randint(vocab_size, (length,), generator=generator).tolist())
    rewards = torch.rand(PROMPTS * GENERATIONS, generator=generator)
    return prompt_ids, completion_ids, rewards


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == args.processes, f"launched {accelerator.num_processes} process(es)"
    tokenizer = load_tokenizer(TINY_RANDOM_LLM)
    settings = GRPOSettings(prompts_per_step=PROMPTS, num_generations=GENERATIONS, learning_rate=1e-2,
                            loss_type="dapo", num_iterations=2, beta=0.05, top_entropy_quantile=0.5,
                            gradient_accumulation_steps=args.accumulation, lora_r=4, lora_alpha=8, seed=0)
    torch.manual_seed(0)  # the same LoRA initialisation everywhere (DDP would broadcast rank 0's anyway)
    grpo = GRPOTrainer(load_llm(TINY_RANDOM_LLM, dtype=torch.float32, seed=0), tokenizer, settings, accelerator)

    prompt_ids, completion_ids, rewards = fixed_rollouts(len(tokenizer))
    per_process = len(rewards) // accelerator.num_processes
    mine = slice(accelerator.process_index * per_process, (accelerator.process_index + 1) * per_process)
    inputs = collate(prompt_ids[mine], completion_ids[mine], tokenizer.pad_token_id)
    with torch.no_grad():
        old_logps, entropies = completion_logps(grpo.pair.policy, inputs, with_entropies=True)
    batch = grpo.rollout_batch(inputs, rewards[mine], old_logps, entropies)
    metrics = grpo.optimise(batch)
    assert metrics is not None, "the update was skipped"
    if accelerator.is_main_process:
        lora = {name: p.detach().clone() for name, p in grpo.pair.policy.named_parameters() if p.requires_grad}
        save_file(lora, args.out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
