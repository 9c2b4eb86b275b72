"""Checks of RecBole atomic files before RecBole reads them, so that a malformed file stops the run with one
message naming the file, the line and the fix, instead of a pandas traceback from deep inside RecBole.

Checked: every header column is ``name:type`` with one of RecBole's types; every row has as many columns as
the header; ``float`` columns hold numbers (empty cells are allowed: RecBole fills them).
"""
import os

from recbole.utils import FeatureType

_TYPES = {t.value for t in FeatureType}
_SUFFIXES = ("inter", "item", "user")


class DatasetFormatError(ValueError):
    """An atomic file does not follow RecBole's format."""


def check_atomic_file(path, separator="\t"):
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n").split(separator)
        types = []
        for column in header:
            name, _, kind = column.partition(":")
            if not name or kind not in _TYPES:
                raise DatasetFormatError(
                    f"{path}:1: header column {column!r} must be name:type with type one of "
                    f"{', '.join(sorted(_TYPES))} (e.g. user_id:token, timestamp:float)")
            types.append(kind)
        names = [column.partition(":")[0] for column in header]
        floats = [i for i, kind in enumerate(types) if kind == FeatureType.FLOAT.value]
        for number, line in enumerate(handle, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cells = line.split(separator)
            if len(cells) != len(header):
                raise DatasetFormatError(f"{path}:{number}: {len(cells)} columns, the header has {len(header)} "
                                         f"(columns are separated by {separator!r})")
            for index in floats:
                try:
                    if cells[index]:
                        float(cells[index])
                except ValueError:
                    raise DatasetFormatError(f"{path}:{number}: {names[index]} must be a number, got "
                                             f"{cells[index]!r}") from None


def check_atomic_files(folder, dataset_name, separator="\t"):
    """Check ``<dataset>.inter`` / ``.item`` / ``.user`` in ``folder`` where they exist."""
    for suffix in _SUFFIXES:
        path = os.path.join(folder, f"{dataset_name}.{suffix}")
        if os.path.isfile(path):
            check_atomic_file(path, separator)
