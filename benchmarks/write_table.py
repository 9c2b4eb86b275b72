"""Write a comparison folder's table, CSV, JSON, PNG and paired tests from every row that ran in it, whatever
command ran it (e.g. rows with a ``--suffix``), without running anything. ``--pair=ROW:AGAINST`` (repeatable) adds
a paired test the automatic ones do not make, e.g. between rows of different suffixes; it is kept in the folder's
pairs.txt, so the folder's later tables (this script's or a comparison's) have it too. Run it from the repository root,
where the rows' commands run. It refuses rows whose command would not run them again (a plugin default or a config
file they name changed since) or rows of one name whose seeds ran with different settings: under one name they would
pool.

    python benchmarks/write_table.py benchmarks/compare-beauty
    python benchmarks/write_table.py benchmarks/compare-ml100k --pair=RPORec-stage1-minilm-train3:RPORec-no-reasoning-minilm
"""
import argparse

from rporec_recbole.comparison import (add_folder_pairs, pairs_and_rows_of_command_line, refuse_unfit_folder,
                                       write_folder_outputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--pair", action="append", default=[], metavar="ROW:AGAINST")
    args = parser.parse_args(argv)
    pairs, rows = pairs_and_rows_of_command_line(parser, args.pair, args.out_dir)
    names = {row["model"] for row in rows}
    unknown = sorted(name for pair in pairs for name in pair if name.removesuffix(" stage 1") not in names)
    if unknown:
        parser.error(f"--pair needs ROW:AGAINST with rows of {args.out_dir}; unknown: {unknown}")
    refuse_unfit_folder(parser, args.out_dir)
    add_folder_pairs(args.out_dir, pairs)
    print(write_folder_outputs(args.out_dir))


if __name__ == "__main__":
    main()
