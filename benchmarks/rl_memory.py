"""Resident memory of the GRPO stage under each heap policy of ``rporec_recbole/cpu_allocator.py``.

Runs the RL stage from a finished stage-1 checkpoint (the RecHead frozen, the run's own config) once per policy,
each in its own process, and prints the resident set after every GRPO step, its growth per step over the second
half of the run and the seconds per step, side by side:

    python benchmarks/rl_memory.py --checkpoint=/tmp/pipeline/saved/RPORec-<time> --steps=20 \
        [--output=benchmarks/rl_memory.json]

Policies: ``keep`` (every allocation from the heap, never trimmed: what stage 1 runs with), ``glibc`` (glibc's
defaults, ``RPOREC_KEEP_FREED_MEMORY=0``) and ``keep+trim@MB`` (the heap kept, its free pages handed back to the OS
after a GRPO step once the resident set grew MB since the last trim: ``rl_trim_heap_mb``, 0 = every step).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

POLICIES = ("keep", "glibc", "keep+trim@0", "keep+trim@1024")


def trim_budget(policy):
    """``rl_trim_heap_mb`` of a policy: the MB after ``keep+trim@``, None (never) for the others."""
    return float(policy.split("@")[1]) if policy.startswith("keep+trim@") else None


def measure(checkpoint, steps, policy):
    """One RL run under ``policy``: {"rss_mb": [before, after step 1, ...], "seconds": [per step], "trims": n}."""
    from rporec_recbole import cpu_allocator
    from rporec_recbole.grpo_trainer import run_rl_stage
    from rporec_recbole.quick_start import load_run
    from rporec_recbole.timing import resident_mb
    from rporec_recbole.trainer import RPORecTrainer

    if policy != "glibc":
        assert cpu_allocator.keep_freed_memory(), "the heap policy needs glibc"
    with tempfile.TemporaryDirectory() as folder:
        config, _, loaders, model = load_run(checkpoint, use_gpu=False, rl=True, rl_steps=steps, rl_eval_step=0,
                                             checkpoint_dir=folder, rl_save_step=steps, show_progress=False,
                                             rl_trim_heap_mb=trim_budget(policy))
        trainer = RPORecTrainer(config, model)
        trainer.fit_started = time.time()  # RL checkpoints record the training time since fit began
        rss, seconds, last, trims = [resident_mb()], [], [time.perf_counter()], [0]
        log_step = trainer.log_rl_step

        def log_and_sample(metrics):
            rss.append(metrics["resident_mb"])  # read by run_rl_stage after its heap trim, if any
            trims[0] += int(metrics["heap_trimmed"])
            now = time.perf_counter()
            seconds.append(now - last[0])
            last[0] = now
            log_step(metrics)

        trainer.log_rl_step = log_and_sample
        run_rl_stage(trainer, loaders[0])
    return {"rss_mb": [round(r, 1) for r in rss], "seconds": [round(s, 2) for s in seconds], "trims": trims[0]}


def growth_per_step(rss):
    """MB per step, a least-squares slope over the second half of the steps (after the first shapes are met)."""
    half = rss[len(rss) // 2:]
    return float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a stage-1 RPORec checkpoint folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--output", default=None, help="also write the measurements as JSON")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the child process's policy
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(args.checkpoint, args.steps, args.measure)))
        return

    from rporec_recbole.timing import machine_description

    results = {}
    for policy in args.policies.split(","):
        env = dict(os.environ, RPOREC_KEEP_FREED_MEMORY="0" if policy == "glibc" else "1")
        child = subprocess.run([sys.executable, __file__, f"--checkpoint={args.checkpoint}", f"--steps={args.steps}",
                                f"--measure={policy}"], env=env, capture_output=True, text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            sys.exit(f"{policy}: failed\n{child.stderr[-3000:]}")
        results[policy] = json.loads(lines[-1][len("RESULT "):])
        rss = results[policy]["rss_mb"]
        print(f"{policy}: RSS {rss[0]:.0f} MB before RL, {rss[-1]:.0f} MB after {args.steps} steps", flush=True)

    print(f"\n| policy | RSS before RL | after step {args.steps // 2} | after step {args.steps} | "
          f"growth per step (2nd half) | s per step (median) | trims |")
    print("|---|---|---|---|---|---|---|")
    for policy, r in results.items():
        rss = r["rss_mb"]
        print(f"| {policy} | {rss[0]:.0f} MB | {rss[args.steps // 2]:.0f} MB | {rss[-1]:.0f} MB | "
              f"{growth_per_step(rss):.1f} MB | {np.median(r['seconds']):.1f} | {r['trims']} |")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(["python"] + sys.argv), "machine": machine_description(),
                       "load_average_1min_at_end": round(os.getloadavg()[0], 2), "results": results}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
