"""How often forced completions parse in the think/answer format, and why the others do not.

Generates reasoning for the first ``--rows`` valid rows of a finished run (its own config: LLM, prompt template,
decoding settings, ``force_answer`` / ``constrain_answer``) through the trainer's own generation path, seeded as
the run seeds it, and counts the completions that parse, and the tag counts of those that do not:

    python benchmarks/answer_format.py --checkpoint=/tmp/pipeline/saved/RPORec-<time> --rows=128

Nothing is read from or written to a reasoning store, so two commits can be compared on the same rows.
"""
import argparse
import collections
import json
import time

from rporec_recbole.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, parse_output
from rporec_recbole.quick_start import load_run
from rporec_recbole.timing import machine_description
from rporec_recbole.trainer import RPORecTrainer


def failure_kind(completion):
    """Why a completion does not parse: the count of each tag (think, /think, answer, /answer), or what else."""
    counts = tuple(completion.count(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
    return f"tag counts {counts}" if counts != (1, 1, 1, 1) else "tags in order, blank reasoning/answer or order"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a finished RPORec run with force_answer=True")
    parser.add_argument("--rows", type=int, default=128)
    args = parser.parse_args()
    config, _, (_, valid_data, _), model = load_run(args.checkpoint, use_gpu=False, show_progress=False)
    feat = valid_data._dataset.inter_feat
    rows = slice(0, args.rows)
    windows = model.windows(feat[model.ITEM_SEQ][rows], feat[model.ITEM_SEQ_LEN][rows])
    prompts = [model.prompts.build(w) for w in windows]
    trainer = RPORecTrainer(config, model)
    started = time.perf_counter()
    completions = trainer._generate(prompts)
    seconds = time.perf_counter() - started
    # the chat template opens <think> in the prompt (parsing.py): the completion starts inside the reasoning
    parsed = [parse_output(THINK_OPEN + c) for c in completions]
    failures = collections.Counter(failure_kind(THINK_OPEN + c) for c, p in zip(completions, parsed) if not p.format_ok)
    print(json.dumps({"checkpoint": args.checkpoint, "rows": len(prompts), "force_answer": config["force_answer"],
                      "constrain_answer": config["constrain_answer"],
                      "format_ok": sum(p.format_ok for p in parsed), "failures": dict(failures.most_common()),
                      "generation_seconds": round(seconds, 1), "machine": machine_description()}, indent=2))


if __name__ == "__main__":
    main()
