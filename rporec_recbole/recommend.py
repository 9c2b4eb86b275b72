"""Recommend for one user from a trained run: recent history, the generated reasoning, top-K items.

    python -m rporec_recbole.recommend --checkpoint saved/RPORec-<time> --user 196 --topk 10 [--json]

The user's whole known history (train, valid and test interactions) is the context, so this is the
recommendation for the user's next, unseen interaction. Works for RecBole sequential baselines too
(without reasoning; with titles where the dataset's config names its title field, as the plugin's dataset
yamls do).
"""
import argparse
import json
import sys

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType

from rporec_recbole.checkpoint import CorruptCheckpointError
from rporec_recbole.item_text import build_item_texts
from rporec_recbole.parsing import THINK_OPEN, parse_output
from rporec_recbole.quick_start import load_run
from rporec_recbole.registry import get_trainer


class UnknownUserError(ValueError):
    pass


class NotSequentialError(ValueError):
    """The checkpoint's model does not read a history (a general recommender such as BPR or Pop)."""


def internal_user_id(dataset, user_token):
    try:
        return dataset.token2id(dataset.uid_field, str(user_token))
    except ValueError:
        raise UnknownUserError(f"user {user_token!r} is not in dataset {dataset.dataset_name!r}") from None


def user_history(dataset, uid, max_length):
    """Internal item ids of user ``uid``'s interactions in time order (the last ``max_length``)."""
    feat = dataset.inter_feat
    rows = (feat[dataset.uid_field] == uid).nonzero().flatten().numpy()
    times = feat[dataset.time_field][rows].numpy() if dataset.time_field else np.arange(len(rows))
    items = feat[dataset.iid_field][rows].numpy()[np.argsort(times, kind="stable")]
    return items[-max_length:].tolist()


def item_titles(config, dataset, model):
    """The texts RPORec shows its LLM; for a baseline the dataset's titles when its config names a loaded title
    field (the plugin's dataset yamls do, for every model), else blanks."""
    if hasattr(model, "item_texts"):
        return model.item_texts
    title_field = config["item_title_field"]
    if title_field and dataset.item_feat is not None and title_field in dataset.item_feat:
        length = {"max_chars": config["max_item_text_chars"]} if config["max_item_text_chars"] else {}
        return build_item_texts(dataset, title_field, config["item_text_fields"] or (), **length)
    return [""] * dataset.item_num


def recommend(checkpoint, user, topk=10):
    config, dataset, _, model = load_run(checkpoint, show_progress=False, use_gpu=False)  # one user: CPU tensors
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        raise NotSequentialError(f"{config['model']} is not a sequential model: recommend builds its input from the "
                                 "user's history, which only sequential models read")

    uid = internal_user_id(dataset, user)
    history = user_history(dataset, uid, model.max_seq_length)
    item_seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    item_seq[0, : len(history)] = torch.tensor(history)
    item_seq_len = torch.tensor([len(history)])
    out = {"user": str(user), "model": config["model"], "checkpoint": str(checkpoint)}
    if hasattr(model, "prompts"):
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        trainer.ensure_reasoning(item_seq, item_seq_len, "recommend")
        window = model.windows(item_seq, item_seq_len)[0]
        completion = trainer.reasoning_store().get(model.prompts.build(window)) or ""
        parsed = parse_output(THINK_OPEN + completion)
        out.update(reasoning=parsed.reasoning, answer=parsed.answer, format_ok=parsed.format_ok)
    titles = item_titles(config, dataset, model)
    with torch.no_grad():
        # the user id too: Caser, FPMC, HGN and other sequential models score with a user embedding
        inputs = {model.USER_ID: torch.tensor([uid]), model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: item_seq_len}
        scores = model.full_sort_predict(Interaction(inputs))[0]
    scores[0] = -np.inf
    scores[torch.tensor(history)] = -np.inf  # already seen
    top = torch.topk(scores, topk)
    token = lambda i: str(dataset.id2token(dataset.iid_field, i))
    out["history"] = [{"item": token(i), "title": titles[i]} for i in history[-20:]]
    out["recommendations"] = [{"rank": r + 1, "item": token(i), "title": titles[i], "score": round(float(s), 4)}
                              for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]
    return out


def print_human(out):
    print(f"User {out['user']} — recent history (oldest first):")
    for entry in out["history"]:
        print(f"  {entry['item']:>10}  {entry['title']}")
    if "reasoning" in out:
        print("\nReasoning:\n  " + (out["reasoning"] or "(none)").replace("\n", "\n  "))
        print(f"Answer: {out['answer'] or '(no well-formed answer)'}")
    print(f"\nTop {len(out['recommendations'])}:")
    for rec in out["recommendations"]:
        print(f"  {rec['rank']:>3}. {rec['item']:>10}  {rec['score']:>9.4f}  {rec['title']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder written by a run (saved/...)")
    parser.add_argument("--user", required=True, help="user id as in the dataset's .inter file")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one json object")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    try:
        out = recommend(args.checkpoint, args.user, args.topk)
    except (UnknownUserError, NotSequentialError, CorruptCheckpointError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(out, ensure_ascii=False, indent=2) if args.json else "", end="")
    if not args.json:
        print_human(out)


if __name__ == "__main__":
    main()
