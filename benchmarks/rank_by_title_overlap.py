"""Where in the ranking each row puts a user's test item, with the test users grouped by how much the test item's
title shares with the title of the user's last history item (Jaccard overlap of their title words). Runs nothing.

A model that scores items by their text gives title siblings (shades, sizes of one product) similar scores, which
helps it reach the test item but can keep it from rank 1; this shows per group the share of users whose test item is
at rank 1, at ranks 2-10 and at 11-20, and NDCG@10, each the mean over the seeds the row ran.

    python benchmarks/rank_by_title_overlap.py benchmarks/compare-beauty \
        --rows=SASRec,SASRecF-title32,RPORec-no-semantic-itemtext-cl [--title_field=title]

Run it from the repository root (the rows' config files are relative to it). The split is rebuilt by RecBole from
the first row's command, so the user ids are those the rows were scored with.
"""
import argparse
import os
import statistics

import numpy as np
from recbole.data import create_dataset

from gain_by_item_count import split_config
from rporec_recbole.comparison import folder_rows
from rporec_recbole.per_user import load_per_user, per_user_ndcg

GROUPS = ("0", "(0, 0.25)", "[0.25, 0.5)", "[0.5, 1]")
RANK_BANDS = (("rank 1", 1, 1), ("2-10", 2, 10), ("11-20", 11, 20))


def title_overlaps(config, title_field):
    """``{user id: Jaccard overlap of the title words of the user's test item and last history item}``."""
    dataset = create_dataset(config)
    _, _, test = dataset.build()
    words = dataset.item_feat[title_field].numpy()  # RecBole's token ids of each title's words, 0 padding
    item_field = test.iid_field
    targets = test.inter_feat[item_field].numpy()
    lengths = test.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    lasts = test.inter_feat[item_field + config["LIST_SUFFIX"]].numpy()[np.arange(len(lengths)), lengths - 1]
    overlaps = {}
    for user, target, last in zip(test.inter_feat[test.uid_field].tolist(), targets, lasts):
        a, b = set(words[target]) - {0}, set(words[last]) - {0}
        overlaps[user] = len(a & b) / len(a | b) if a | b else 0.0
    return overlaps


def group_of(overlap):
    """The label in ``GROUPS`` of an overlap in [0, 1]: no shared word apart, then bands of 0.25, 0.25 and 0.5."""
    if overlap == 0:
        return GROUPS[0]
    return GROUPS[1] if overlap < 0.25 else GROUPS[2] if overlap < 0.5 else GROUPS[3]


def target_ranks(evaluation):
    """``{user id: rank of the test item}`` from RecBole's ``rec.topk`` rows; 0 when it is not in the top 20."""
    hits = evaluation["topk"][:, :-1].astype(bool)
    ranks = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    return dict(zip(evaluation["user_id"].tolist(), ranks.tolist()))


def band_shares(ranks):
    """Share of ``ranks`` in each rank band."""
    ranks = np.asarray(ranks)
    return [float(np.mean((ranks >= low) & (ranks <= high))) for _, low, high in RANK_BANDS]


def rank_table(rows, out_dir, names, overlaps):
    """One line per (group, row): the group, its users, the row, its seeds and ``band_shares`` then NDCG@10 (RecBole's
    metric, as the comparison table reports it), each averaged over the seeds."""
    by_name = {}
    for row in rows:
        if row["model"] in names and "per_user" in row:
            test = load_per_user(os.path.join(out_dir, "rows", row["per_user"]))["test"]
            by_name.setdefault(row["model"], {})[row["seed"]] = (target_ranks(test), per_user_ndcg(test, 10))
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"no per-user results for {', '.join(missing)}")
    members = {}
    for user, overlap in overlaps.items():
        members.setdefault(group_of(overlap), []).append(user)
    table = []
    for label in GROUPS + ("all",):
        users = list(overlaps) if label == "all" else members.get(label, [])
        if not users:
            continue
        for name in names:
            seeds = sorted(by_name[name])
            per_seed = [band_shares([ranks[user] for user in users]) + [statistics.fmean(ndcg[user] for user in users)]
                        for ranks, ndcg in (by_name[name][seed] for seed in seeds)]
            table.append({"group": label, "users": len(users), "row": name, "seeds": seeds,
                          "values": [statistics.fmean(column) for column in zip(*per_seed)]})
    return table


def markdown(table):
    lines = ["| title overlap with the last item | users | row | seeds | " + " | ".join(b for b, _, _ in RANK_BANDS)
             + " | NDCG@10 |", "|---|---|---|---|" + "---|" * (len(RANK_BANDS) + 1)]
    for line in table:
        values = " | ".join(f"{value:.4f}" for value in line["values"])
        lines.append(f"| {line['group']} | {line['users']} | {line['row']} | {','.join(map(str, line['seeds']))} | "
                     f"{values} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--rows", required=True, help="comma-separated row names")
    parser.add_argument("--title_field", default="title")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.rows.split(",") if name.strip()]
    rows = folder_rows(args.out_dir)
    if not rows:
        parser.error(f"no rows in {args.out_dir}/rows")
    try:
        print(markdown(rank_table(rows, args.out_dir, names, title_overlaps(split_config(rows), args.title_field))))
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
