"""Write a comparison folder's table, CSV, JSON, PNG and paired tests from every row that ran in it, whatever
command ran it (e.g. rows with a ``--suffix``), without running anything. ``--pair=ROW:AGAINST`` (repeatable) adds
a paired test the automatic ones do not make, e.g. between rows of different suffixes. Run it from the repository root,
where the rows' commands run. It refuses rows whose command would not run them again (a plugin default or a config
file they name changed since): under their name they would pool with the rows run under the new values.

    python benchmarks/write_table.py benchmarks/compare-beauty
    python benchmarks/write_table.py benchmarks/compare-ml100k --pair=RPORec-stage1-minilm-train3:RPORec-no-reasoning-minilm
"""
import argparse
import json
from pathlib import Path

from rporec_recbole.comparison import reproduces, write_outputs


def refuse_rows_that_do_not_reproduce(parser, rows):
    try:
        stale = [row for row in rows if not reproduces(row)]
    except OSError as err:  # a config file a row names, relative to the repository root
        parser.error(f"{err} (run from the repository root)")
    if stale:
        parser.error("rows whose command would not run them again (a plugin default or a config file they name "
                     "changed since, or the command cannot be read); in each row's json, add a suffix for what it ran "
                     "to `model` and the old values to `command` (the key stays): "
                     + ", ".join(f"{row['model']} seed {row['seed']}" for row in stale))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--pair", action="append", default=[], metavar="ROW:AGAINST")
    args = parser.parse_args(argv)
    pairs = [pair.split(":", 1) for pair in args.pair]
    rows = [json.loads(path.read_text()) for path in sorted(Path(args.out_dir, "rows").glob("*.json"))]
    names = {row["model"] for row in rows}
    unknown = sorted(name for pair in pairs for name in pair if name.removesuffix(" stage 1") not in names)
    if unknown or any(len(pair) != 2 for pair in pairs):
        parser.error(f"--pair needs ROW:AGAINST with rows of {args.out_dir}; unknown: {unknown}")
    refuse_rows_that_do_not_reproduce(parser, rows)
    # baselines first, then RPORec rows; seeds in order
    rows.sort(key=lambda row: (row["model"].startswith("RPORec"), row["model"], row["seed"]))
    print(write_outputs(rows, args.out_dir, extra_pairs=pairs))


if __name__ == "__main__":
    main()
