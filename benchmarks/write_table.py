"""Write a comparison folder's table, CSV, JSON, PNG and paired tests from every row that ran in it, whatever
command ran it (e.g. rows with a ``--suffix``), without running anything. ``--pair=ROW:AGAINST`` (repeatable) adds
a paired test the automatic ones do not make, e.g. between rows of different suffixes. It refuses rows whose command
no longer reproduces them (a default changed since they ran), as under their old name they would pool with the rows
of the new default.

    python benchmarks/write_table.py benchmarks/compare-beauty
    python benchmarks/write_table.py benchmarks/compare-ml100k --pair=RPORec-stage1-minilm-train3:RPORec-no-reasoning-minilm
"""
import argparse
import glob
import json
import os

from rporec_recbole.comparison import rows_run_under_other_defaults, write_outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--pair", action="append", default=[], metavar="ROW:AGAINST")
    args = parser.parse_args(argv)
    pairs = [pair.split(":", 1) for pair in args.pair]
    rows = [json.load(open(path)) for path in glob.glob(os.path.join(args.out_dir, "rows", "*.json"))]
    names = {row["model"] for row in rows}
    unknown = sorted(name for pair in pairs for name in pair if name.removesuffix(" stage 1") not in names)
    if unknown or any(len(pair) != 2 for pair in pairs):
        parser.error(f"--pair needs ROW:AGAINST with rows of {args.out_dir}; unknown: {unknown}")
    stale = rows_run_under_other_defaults(rows)
    if stale:
        parser.error("rows whose command no longer reproduces them (a default changed since they ran); rename each for "
                     "what it ran and put the old value in its command: "
                     + ", ".join(f"{row['model']} seed {row['seed']}" for row in stale))
    # baselines first, then RPORec rows; seeds in order
    rows.sort(key=lambda row: (row["model"].startswith("RPORec"), row["model"], row["seed"]))
    print(write_outputs(rows, args.out_dir, extra_pairs=pairs))


if __name__ == "__main__":
    main()
