"""Where one comparison row beats another: the test users grouped by how often their test item occurs in training,
each group with its own paired test on per-user test NDCG@10 (over the seeds both rows ran); with ``--split=valid``
the same on valid, so that a choice between rows can rest on valid alone (rows keep each valid user's result since
session 40; it is the tested model's, so with ``item_text_share_on_valid`` it is that of shares chosen on valid,
optimistic as the row's valid after the search is). Runs nothing.

A branch that reads item text should help most where an item's collaborative embedding learned least, i.e. items
seen few times in training; this tests that within one dataset, on rows that already ran.

    python benchmarks/gain_by_item_count.py benchmarks/compare-beauty \
        --pair=RPORec-no-reasoning-itemtext:RPORec-no-reasoning [--edges=5,10,20,50,100] [--split=valid]

Run it from the repository root (the rows' config files are relative to it). The split is rebuilt by RecBole from
the first row's command, so the user ids are those the rows were scored with.
"""
import argparse
import bisect
import sys

from recbole.data import create_dataset

from rporec_recbole.comparison import (paired_values, pairs_and_rows_of_command_line, parse_command,
                                       per_user_results)
from rporec_recbole.config import Config
from rporec_recbole.item_popularity import training_counts
from rporec_recbole.per_user import paired_test

DEFAULT_EDGES = (5, 10, 20, 50, 100)


def counts_of_held_out_items(config, split="test"):
    """``{user id: training count of the user's test (or valid) item}`` under ``config``'s split, as RecBole builds
    it."""
    train, valid, test = create_dataset(config).build()
    held_out = test if split == "test" else valid
    counts = training_counts(train).numpy()
    users = held_out.inter_feat[held_out.uid_field].tolist()
    return dict(zip(users, counts[held_out.inter_feat[held_out.iid_field].numpy()].tolist()))


def split_config(rows):
    """The config of the first of ``rows``'s commands: every row of a folder is scored on the split it builds."""
    model, dataset, seed, config_files, overrides = parse_command(rows[0]["command"])
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv: the row's command is the config
    return Config(model=model, dataset=dataset, config_file_list=config_files,
                  config_dict={**overrides, "seed": seed, "state": "WARNING"})


def group_labels(edges):
    bounds = [0, *edges]
    return [f"{low}-{high - 1}" for low, high in zip(bounds, edges)] + [f"{edges[-1]}+"]


def gain_by_item_count(results, row, against, counts, edges=DEFAULT_EDGES):
    """One dict per group of users ([0, edges[0]), [edges[0], edges[1]), ..., [edges[-1], inf) training occurrences
    of their test item; empty groups left out), then one for all users: the group, its users, both rows' mean value
    and the paired test's p-value."""
    seeds, values_row, values_against = paired_values(results, row, against)
    if not seeds:
        raise ValueError(f"{row} and {against} share no seed with per-user results on this split")
    labels = group_labels(edges)
    members = {}
    for user in values_row.keys() & values_against.keys():
        members.setdefault(labels[bisect.bisect_right(edges, counts[user])], []).append(user)
    groups = [(label, members[label]) for label in labels if label in members]
    groups.append(("all", [user for _, users in groups for user in users]))
    table = []
    for label, users in groups:
        n, mean_row, mean_against, p_value = paired_test({u: values_row[u] for u in users},
                                                         {u: values_against[u] for u in users})
        table.append({"group": label, "users": n, "seeds": seeds, "row": mean_row, "against": mean_against,
                      "p_value": p_value})
    return table


def markdown(table, row, against, split="test"):
    lines = [f"{row} against {against} ({split} NDCG@10 per user, seeds {','.join(map(str, table[0]['seeds']))}), "
             f"by the training count of the user's {split} item:", "",
             f"| {split} item seen in training | users | row | against | ratio | p |", "|---|---|---|---|---|---|"]
    for g in table:
        ratio = f"{g['row'] / g['against']:.2f}x" if g["against"] > 0 else "-"
        lines.append(f"| {g['group']} | {g['users']} | {g['row']:.4f} | {g['against']:.4f} | {ratio} | "
                     f"{g['p_value']:.2g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--pair", action="append", required=True, metavar="ROW:AGAINST")
    parser.add_argument("--edges", default=",".join(map(str, DEFAULT_EDGES)),
                        help="increasing training counts where a group starts")
    parser.add_argument("--split", choices=("test", "valid"), default="test",
                        help="valid reads the rows' per-user valid results (kept by rows run since session 40), "
                             "for choices that must not look at test")
    args = parser.parse_args(argv)
    try:
        edges = [int(edge) for edge in args.edges.split(",")]
    except ValueError:
        edges = []
    if not edges or edges != sorted(set(edges)) or edges[0] <= 0:
        parser.error("--edges must be increasing positive counts")
    pairs, rows = pairs_and_rows_of_command_line(parser, args.pair, args.out_dir)
    counts = counts_of_held_out_items(split_config(rows), args.split)
    results = per_user_results(rows, args.out_dir, split=args.split)
    for row, against in pairs:
        try:
            print(markdown(gain_by_item_count(results, row, against, counts, edges), row, against, args.split))
        except ValueError as err:
            parser.error(str(err))


if __name__ == "__main__":
    main()
