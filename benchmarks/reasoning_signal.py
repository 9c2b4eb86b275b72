"""Does the generated text say anything about the next item? A zero-shot probe in the RecHead's own text space:
rank every item by the cosine between its text embedding (the item table E) and a query built from one row's
prompt window, its reasoning, its answer, or prompt and reasoning together, with no training at all.

    python benchmarks/reasoning_signal.py --checkpoint=saved/RPORec-<time> --reasoning_dir=saved/reasoning

If the reasoning alone ranks the target no better than chance, or prompt + reasoning no better than the prompt
alone, the text carries no next-item signal beyond the history, and no RecHead trained on it can gain from it.
Valid rows by default (design decisions are made on valid); RecBole's sequential protocol (full ranking, only the
padding item masked). The model's trained weights are not used: only its text embedder and item table.
"""
import argparse
import os

import torch
import torch.nn.functional as F

from reasoning_effect import run_identity, stores
from rporec_recbole.per_user import target_rank_metrics
from rporec_recbole.quick_start import load_run
from rporec_recbole.reasoning_store import prompt_key


def ndcg_and_recall(scores, target, k=10):
    """Rounded NDCG@k and Recall@k over every item but the padding item 0 (RecBole's sequential protocol)."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    return tuple(round(value, 4) for value in target_rank_metrics(scores, target, k))


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run with the semantic branch (its text embedder)")
    parser.add_argument("--reasoning_dir", required=True, help="the run's reasoning_dir (its dataset folder inside)")
    parser.add_argument("--policy", default="initial", help="which store's reasoning (as reasoning_effect.py names it)")
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    args = parser.parse_args()
    config, _, (_, valid_data, test_data), model = load_run(args.checkpoint, use_gpu=False)
    feat = (valid_data if args.split == "valid" else test_data)._dataset.inter_feat
    seq, seq_len, target = feat[model.ITEM_SEQ], feat[model.ITEM_SEQ_LEN], feat[model.POS_ITEM_ID]
    texts = stores(os.path.join(args.reasoning_dir, config["dataset"]), run_identity(config, model))[args.policy]
    completions = [texts.get(prompt_key(model.prompts.build(w)), "") for w in model.windows(seq, seq_len)]
    reasoning, answers, flags = model.reasoning.encode(completions)
    prompt = model.pooled_prompt(seq, seq_len)
    unit = lambda x: F.normalize(x.float(), dim=-1)
    queries = {"prompt window": unit(prompt), "reasoning": unit(reasoning), "answer": unit(answers),
               "prompt + reasoning": unit(unit(prompt) + unit(reasoning))}
    table = unit(model.item_text_table).T
    print(f"{config['dataset']}, {args.split} rows: {len(target)}, with reasoning text: "
          f"{sum(bool(c) for c in completions)}, in the think/answer format: {int(flags.sum())}, "
          f"text embedder: {config['text_embedder']}, items: {model.n_items - 1}")
    print("| query | rows | NDCG@10 | Recall@10 |\n|---|---|---|---|")
    for name, query in queries.items():
        rows = query.abs().sum(dim=1) > 0  # an empty text is the zero vector: all ties, no ranking to score
        ndcg, recall = ndcg_and_recall(query[rows] @ table, target[rows]) if rows.any() else ("-", "-")
        print(f"| {name} | {int(rows.sum())} | {ndcg} | {recall} |")
    chance_ndcg = float((1 / torch.log2(torch.arange(2, 12.0))).sum()) / (model.n_items - 1)
    print(f"| chance (random scores) | | {chance_ndcg:.4f} | {10 / (model.n_items - 1):.4f} |")


if __name__ == "__main__":
    main()
