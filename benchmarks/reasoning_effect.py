"""How much the reasoning moves a trained RPORec's ranking: the same model and rows (test by default) scored with
(a) the initial policy's reasoning, (b) the RL-tuned policy's reasoning, (c) no reasoning at all; with every store
of the run (its LLM, seed and prompt template) under its reasoning_dir, answer-forced ones (``--force_answer=True``)
marked as such, so one model can be scored with the reasoning of a run with and of a run without forcing.

    python benchmarks/reasoning_effect.py --checkpoint=saved/RPORec-<time> --reasoning_dir=saved/reasoning \
        [--split=test|valid|train]

``--split=train`` scores the training rows that stage 1 saw with reasoning (the latest ``reasoning_train_per_user``
of each user): a variant far better there than on test is memorised rather than learned.

Prints, per variant, the rows' NDCG@10 (full ranking with the prompt window's items masked; RecBole's sequential
protocol masks none, so these run higher than the comparison's) and, against (a), the mean absolute score change
and the share of users whose top-10 list changes.
"""
import argparse
import glob
import json
import os

import torch

from rporec_recbole.per_user import target_rank_metrics
from rporec_recbole.quick_start import load_run
from rporec_recbole.reasoning_store import prompt_key
from rporec_recbole.trainer import INITIAL_POLICY, latest_samples, reasoning_store_settings


RUN_IDENTITY = ("llm_path", "llm_seed", "template")  # what makes a store this run's: its LLM, seed and prompt


def run_identity(config, model):
    settings = reasoning_store_settings(config, model, INITIAL_POLICY)  # as the run's trainer names its stores
    return {key: settings[key] for key in RUN_IDENTITY}


def stores(root, run):
    """{label: {prompt key: text}} of the reasoning stores under ``root`` written for ``run`` (``run_identity``): one
    per policy, "<policy> (forced)" for stores written with answer forcing ("(forced, item answers)" with the answers
    constrained to items), and the folder name added where two stores would share a label (other decoding
    settings). Stores of other seeds (regression: they overwrote the run's own under the same policy name) or other
    LLMs are left out."""
    by_policy = {}
    for folder in sorted(glob.glob(os.path.join(root, "*"))):
        with open(os.path.join(folder, "settings.json")) as handle:
            settings = json.load(handle)
        if any(settings.get(key) != run[key] for key in RUN_IDENTITY):
            continue
        label = settings["policy"] + (" (forced, item answers)" if settings.get("constrain_answer")
                                      else " (forced)" if settings.get("force_answer") else "")
        if label in by_policy:
            label += f" [{os.path.basename(folder)}]"
        with open(os.path.join(folder, "reasoning.jsonl")) as handle:
            entries = [json.loads(line) for line in handle if line.strip()]
        by_policy[label] = {e["key"]: e["text"] for e in entries}
    return by_policy


def split_rows(config, loaders, model, split):
    """``(item_seq, item_seq_len, target)`` of the split's rows; for train, those that had reasoning in stage 1."""
    dataset = dict(zip(("train", "valid", "test"), loaders))[split]._dataset
    feat = dataset.inter_feat
    rows = slice(None)
    if split == "train":
        rows = latest_samples(dataset, model.ITEM_SEQ_LEN, config["reasoning_train_per_user"])
    return feat[model.ITEM_SEQ][rows], feat[model.ITEM_SEQ_LEN][rows], feat[model.POS_ITEM_ID][rows]


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--reasoning_dir", required=True, help="the run's reasoning_dir (its dataset folder inside)")
    parser.add_argument("--split", default="test", choices=("test", "valid", "train"))
    args = parser.parse_args()
    config, _, loaders, model = load_run(args.checkpoint, use_gpu=False)  # scored on CPU tensors
    seq, seq_len, target = split_rows(config, loaders, model, args.split)
    prompts = [model.prompts.build(w) for w in model.windows(seq, seq_len)]
    print(f"{args.split} rows: {len(prompts)}")
    texts = stores(os.path.join(args.reasoning_dir, config["dataset"]), run_identity(config, model))
    policies = sorted(texts, key=lambda policy: (policy != "initial", policy))  # the initial policy is the reference
    variants = {policy: [texts[policy].get(prompt_key(p), "") for p in prompts] for policy in policies}
    variants["no reasoning"] = [""] * len(prompts)
    baseline, results = None, {}
    for name, completions in variants.items():
        scores = model.score(model.users_for_completions(seq, seq_len, completions)).float()
        scores[:, 0] = -torch.inf
        scores.scatter_(1, seq, -torch.inf)
        ndcg, _ = target_rank_metrics(scores, target, k=10)
        top10 = scores.topk(10, dim=1).indices
        row = {"ndcg@10": round(ndcg, 4), "with_text": sum(bool(c) for c in completions)}
        if baseline is None:
            baseline = (scores, top10)
        else:
            finite = torch.isfinite(scores) & torch.isfinite(baseline[0])
            row["mean_abs_score_change"] = float((scores - baseline[0])[finite].abs().mean())
            row["users_with_changed_top10"] = float((top10.sort(1).values != baseline[1].sort(1).values)
                                                    .any(1).float().mean())
        results[name] = row
        print(name, row, flush=True)


if __name__ == "__main__":
    main()
