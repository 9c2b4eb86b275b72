"""Write a comparison folder's table, CSV, JSON, PNG and paired tests from every row that ran in it, whatever
command ran it (e.g. rows with a ``--suffix``), without running anything.

    python benchmarks/write_table.py benchmarks/compare-beauty
"""
import glob
import json
import os
import sys

from rporec_recbole.comparison import write_outputs


def main():
    out_dir = sys.argv[1]
    rows = [json.load(open(path)) for path in glob.glob(os.path.join(out_dir, "rows", "*.json"))]
    # baselines first, then RPORec rows; seeds in order
    rows.sort(key=lambda row: (row["model"].startswith("RPORec"), row["model"], row["seed"]))
    print(write_outputs(rows, out_dir))


if __name__ == "__main__":
    main()
