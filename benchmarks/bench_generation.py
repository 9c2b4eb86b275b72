"""HF ``generate`` vs ``GenerationEngine``, side by side in one process, on realistic RPORec prompts.

Both sides: the same model and dtype, the same left-padded batches of chat-formatted movie-history prompts,
temperature/top-p sampling (top-k off), and ``min_new_tokens == max_new_tokens`` so that EOS is banned and every
row generates exactly ``--new-tokens`` tokens. Timings are wall-clock for the whole call (tokenized ids in,
token ids out; prefill included). Peak memory is the process's peak RSS (``resource.getrusage``, ru_maxrss),
which includes the model weights and both runs.

    python benchmarks/bench_generation.py            # writes benchmarks/generation.json
"""
import argparse
import json
import os
import random
import resource
import sys
import time

import torch

from rporec_recbole.generation import GenerationEngine, _left_pad
from rporec_recbole.llm import EMBEDDED_LLM, load_llm, load_tokenizer
from rporec_recbole.prompt import INSTRUCTION
from rporec_recbole.timing import machine_description

_HERE = os.path.dirname(os.path.abspath(__file__))
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def movie_texts():
    """'Title (year) | genres' strings from RecBole's bundled ml-100k item file."""
    import recbole

    path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.item")
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [f"{title} ({year}) | {genres}" for _, title, year, genres in rows]


def build_prompts(tokenizer, count, target_tokens, seed=0):
    """Chat-formatted RPORec-style prompts: random movie histories, grown until about ``target_tokens`` tokens."""
    rng = random.Random(seed)
    movies = movie_texts()
    prompts = []
    for _ in range(count):
        history = []
        while True:
            history.append(rng.choice(movies))
            lines = "\n".join(f"{n}. {text}" for n, text in enumerate(history, 1))
            message = INSTRUCTION.format(example=movies[0], history=lines)
            text = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                 add_generation_prompt=True) + "<think>"
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if len(ids) >= target_tokens + rng.randint(-40, 40):
                break
        prompts.append(ids)
    return prompts


def run_hf(model, tokenizer, prompt_ids, batch_size, new_tokens, top_p, temperature):
    """HF generate on the same batches (longest first, as the engine sorts them); returns completions and seconds."""
    order = sorted(prompt_ids, key=len, reverse=True)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        input_ids, attention_mask = _left_pad(order[i:i + batch_size], tokenizer.pad_token_id)
        model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, top_p=top_p, top_k=0,
                       temperature=temperature, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       pad_token_id=tokenizer.pad_token_id)
    return time.perf_counter() - start


def run_engine(engine, prompt_ids, new_tokens, top_p, temperature):
    start = time.perf_counter()
    completions = engine.generate_ids(prompt_ids, new_tokens, do_sample=True, top_p=top_p, temperature=temperature,
                                      min_new_tokens=new_tokens)
    seconds = time.perf_counter() - start
    assert all(len(c) == new_tokens for c in completions), "every row must generate exactly new_tokens tokens"
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_LLM)
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=475, help="approximate prompt length")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's own, one per core)")
    parser.add_argument("--skip-hf", action="store_true", help="engine only (quick iterations; writes no JSON)")
    parser.add_argument("--output", default=os.path.join(_HERE, "generation.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model)
    model = load_llm(args.model, dtype=_DTYPES[args.dtype]).eval()
    prompt_ids = build_prompts(tokenizer, args.num_prompts, args.prompt_tokens)
    mean_prompt = sum(map(len, prompt_ids)) / len(prompt_ids)
    engine = GenerationEngine(model, tokenizer, max_batch_size=args.batch_size)
    total_tokens = len(prompt_ids) * args.new_tokens
    print(f"{args.model} {args.dtype}: {len(prompt_ids)} prompts, mean {mean_prompt:.0f} tokens, batch "
          f"{args.batch_size}, {args.new_tokens} new tokens, top_p {args.top_p}, threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    warm = prompt_ids[:2]  # first-call costs (allocator, oneDNN kernels) out of both timings
    engine.generate_ids(warm, 2, top_p=args.top_p)
    engine_s = run_engine(engine, prompt_ids, args.new_tokens, args.top_p, args.temperature)
    print(f"engine: {engine_s:.1f} s, {total_tokens / engine_s:.1f} tokens/s (fast path: {engine.uses_fast_path})")
    if args.skip_hf:
        return
    run_hf(model, tokenizer, warm, args.batch_size, 2, args.top_p, args.temperature)
    hf_s = run_hf(model, tokenizer, prompt_ids, args.batch_size, args.new_tokens, args.top_p, args.temperature)
    print(f"HF generate: {hf_s:.1f} s, {total_tokens / hf_s:.1f} tokens/s")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    result = {
        "hf_tokens_per_s": round(total_tokens / hf_s, 1),
        "engine_tokens_per_s": round(total_tokens / engine_s, 1),
        "generation_speedup": round(hf_s / engine_s, 2),
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": "peak RSS of the whole process (resource.getrusage ru_maxrss), model + both runs",
        "model": args.model,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "num_prompts": len(prompt_ids),
        "prompt_tokens": round(mean_prompt, 1),
        "new_tokens": args.new_tokens,
        "sampling": {"top_p": args.top_p, "temperature": args.temperature, "top_k": None,
                     "eos": "banned on both sides (min_new_tokens = new_tokens)"},
        "hf_seconds": round(hf_s, 2),
        "engine_seconds": round(engine_s, 2),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews both timings
        "machine": machine_description(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    print(f"speedup {result['generation_speedup']}x, peak RSS {peak_mb:.0f} MB")
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
