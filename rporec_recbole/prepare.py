"""``prepare``: raw public dataset files -> RecBole atomic files with item text (``<name>.inter``, ``<name>.item``).

    python -m rporec_recbole.prepare movielens --src=ml-1m/ --out=dataset/ml-1m
    python -m rporec_recbole.prepare movielens --src=ml-100k/ --out=dataset/ml-100k
    python -m rporec_recbole.prepare amazon --ratings=Beauty.csv --meta=meta_Beauty.jsonl --out=dataset/Beauty

MovieLens: ``ratings.dat`` / ``movies.dat`` (ml-1m; ``::``-separated, latin-1) or ``u.data`` / ``u.item``
(ml-100k; tab- and pipe-separated). Items get ``movie_title``, ``release_year`` and the genres (``genre`` for
ml-1m, ``class`` for ml-100k, as RecBole's own atomic files name them). ``users.dat`` (ml-1m) or ``u.user``
(ml-100k), when present, become ``<name>.user`` with ``age``, ``gender``, ``occupation`` and ``zip_code``.
Amazon: a rating csv, 2018 release (``item,user,rating,timestamp``, no header) or 2023 release (header
``user_id,parent_asin,rating,timestamp``), and the metadata as json lines (``asin``/``parent_asin`` and
``title``; the 2014 release's Python-literal lines are read too). Items get ``title``.
Options: ``--min-rating`` keeps interactions rated at least that, ``--k-core`` then keeps users and items with at
least k interactions (repeated until stable). Tabs and line breaks inside titles become spaces (the atomic
format is tab-separated). Reading shows a progress bar per file (``--no-progress`` turns them off).
"""
import argparse
import ast
import csv
import json
import os
import re
import sys
from collections import Counter

from tqdm import tqdm


class PrepareError(ValueError):
    """Raw input that cannot be converted; the message says which file and what is wrong."""


def _clean(text):
    return re.sub(r"[\t\r\n]+", " ", str(text)).strip()


def _iter_lines(path, encoding="utf-8", progress=False):
    """The file's decoded lines (line ends kept), with a progress bar over its bytes when ``progress``."""
    if not os.path.isfile(path):
        raise PrepareError(f"{path} not found")
    with open(path, "rb") as handle, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                          desc=os.path.basename(path), disable=not progress) as bar:
        for raw in handle:
            bar.update(len(raw))
            yield raw.decode(encoding, errors="replace")


def _read_lines(path, encoding="utf-8", progress=False):
    """``(line number, text)`` of the non-blank lines, numbered as in the file."""
    return [(n, line.rstrip("\r\n")) for n, line in enumerate(_iter_lines(path, encoding, progress), 1)
            if line.strip()]


def _interaction(path, line_number, user, item, rating, timestamp):
    try:
        return user.strip(), item.strip(), float(rating), float(timestamp)
    except ValueError:
        raise PrepareError(f"{path}:{line_number}: rating and timestamp must be numbers") from None


# ----- MovieLens -----------------------------------------------------------------------------------------
def _split_title_year(raw):
    """'Toy Story (1995)' -> ('Toy Story', '1995'); titles without a year keep their text."""
    match = re.match(r"^(.*?)\s*\((\d{4})\)\s*$", raw)
    return (match.group(1), match.group(2)) if match else (raw.strip(), "")


USER_FIELDS = [("age", "token"), ("gender", "token"), ("occupation", "token"), ("zip_code", "token")]


def _read_users(path, separator, columns, progress):
    """{user id: {field: value}} from a MovieLens user file, or {} when the release has none."""
    if not os.path.isfile(path):
        return {}
    users = {}
    for n, line in _read_lines(path, "latin-1", progress):
        parts = line.split(separator)
        if len(parts) != len(columns):
            raise PrepareError(f"{path}:{n}: expected {separator.join(columns)}")
        record = dict(zip(columns, parts))
        users[record.pop("user_id").strip()] = record
    return users


def read_movielens(src, progress=False):
    """(interactions, items, genre field name, users) from an ml-1m or ml-100k folder."""
    if os.path.isfile(os.path.join(src, "ratings.dat")):
        ratings = os.path.join(src, "ratings.dat")
        interactions = []
        for n, line in _read_lines(ratings, "latin-1", progress):
            parts = line.split("::")
            if len(parts) != 4:
                raise PrepareError(f"{ratings}:{n}: expected UserID::MovieID::Rating::Timestamp")
            interactions.append(_interaction(ratings, n, *parts))
        items = {}
        for _, line in _read_lines(os.path.join(src, "movies.dat"), "latin-1", progress):
            movie_id, raw_title, genres = line.split("::", 2)
            title, year = _split_title_year(raw_title)
            items[movie_id] = {"movie_title": title, "release_year": year, "genre": genres.replace("|", " ")}
        users = _read_users(os.path.join(src, "users.dat"), "::",
                            ["user_id", "gender", "age", "occupation", "zip_code"], progress)
        return interactions, items, "genre", users
    if os.path.isfile(os.path.join(src, "u.data")):
        ratings = os.path.join(src, "u.data")
        interactions = []
        for n, line in _read_lines(ratings, progress=progress):
            parts = line.split("\t")
            if len(parts) != 4:
                raise PrepareError(f"{ratings}:{n}: expected user<TAB>item<TAB>rating<TAB>timestamp")
            interactions.append(_interaction(ratings, n, *parts))
        genre_names = [line.split("|")[0] for _, line in _read_lines(os.path.join(src, "u.genre"), "latin-1")] \
            if os.path.isfile(os.path.join(src, "u.genre")) else []
        items = {}
        for _, line in _read_lines(os.path.join(src, "u.item"), "latin-1", progress):
            fields = line.split("|")
            title, year = _split_title_year(fields[1])
            flags = fields[5:5 + len(genre_names)]
            genres = " ".join(name for name, flag in zip(genre_names, flags) if flag == "1")
            items[fields[0]] = {"movie_title": title, "release_year": year or fields[2][-4:], "class": genres}
        users = _read_users(os.path.join(src, "u.user"), "|", ["user_id", "age", "gender", "occupation", "zip_code"],
                            progress)
        return interactions, items, "class", users
    raise PrepareError(f"{src} holds neither ratings.dat/movies.dat (ml-1m) nor u.data/u.item (ml-100k)")


# ----- Amazon --------------------------------------------------------------------------------------------
_USER_COLUMNS, _ITEM_COLUMNS = ("user_id", "user", "reviewerid"), ("parent_asin", "asin", "item_id", "item")


def read_amazon_ratings(path, progress=False):
    rows = [row for row in csv.reader(_iter_lines(path, progress=progress)) if row]
    header = [name.strip().lower() for name in rows[0]] if rows else []
    if "rating" in header:  # 2023 release
        try:
            user = next(header.index(c) for c in _USER_COLUMNS if c in header)
            item = next(header.index(c) for c in _ITEM_COLUMNS if c in header)
            rating, timestamp = header.index("rating"), header.index("timestamp")
        except (StopIteration, ValueError):
            raise PrepareError(f"{path}: header {rows[0]} lacks user, item, rating or timestamp columns") from None
        body, first_line = rows[1:], 2
    else:  # 2018 release: item,user,rating,timestamp
        item, user, rating, timestamp = 0, 1, 2, 3
        body, first_line = rows, 1
    interactions = []
    for n, row in enumerate(body, first_line):
        if len(row) <= max(user, item, rating, timestamp):
            raise PrepareError(f"{path}:{n}: expected at least {max(user, item, rating, timestamp) + 1} columns")
        interactions.append(_interaction(path, n, row[user], row[item], row[rating], row[timestamp]))
    return interactions


def read_amazon_titles(path, progress=False):
    """{item id: title} from metadata json lines (2018/2023) or Python-literal lines (2014)."""
    titles = {}
    for n, line in _read_lines(path, progress=progress):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            try:
                record = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                raise PrepareError(f"{path}:{n}: neither json nor a Python literal") from None
        item = record.get("parent_asin") or record.get("asin")
        if item and record.get("title"):
            titles[str(item)] = record["title"]
    return titles


# ----- filters and output --------------------------------------------------------------------------------
def k_core(interactions, k):
    """Drop users and items with fewer than ``k`` interactions until none is left."""
    while k > 1:
        users = Counter(u for u, _, _, _ in interactions)
        items = Counter(i for _, i, _, _ in interactions)
        kept = [row for row in interactions if users[row[0]] >= k and items[row[1]] >= k]
        if len(kept) == len(interactions):
            break
        interactions = kept
    return interactions


def write_atomic(out, name, interactions, items, item_fields, users=None):
    """``<out>/<name>.inter`` (time-ordered per user), ``<out>/<name>.item`` for the items that remain and, given
    ``users``, ``<out>/<name>.user`` for the users that remain."""
    os.makedirs(out, exist_ok=True)
    interactions = sorted(interactions, key=lambda row: (row[0], row[3]))
    with open(os.path.join(out, f"{name}.inter"), "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, rating, timestamp in interactions:
            handle.write(f"{user}\t{item}\t{rating:g}\t{timestamp:.0f}\n")
    used = sorted({item for _, item, _, _ in interactions})
    with open(os.path.join(out, f"{name}.item"), "w", encoding="utf-8") as handle:
        handle.write("\t".join(["item_id:token"] + [f"{f}:{t}" for f, t in item_fields]) + "\n")
        for item in used:
            fields = items.get(item, {})
            handle.write("\t".join([item] + [_clean(fields.get(f, "")) for f, _ in item_fields]) + "\n")
    if users:
        with open(os.path.join(out, f"{name}.user"), "w", encoding="utf-8") as handle:
            handle.write("\t".join(["user_id:token"] + [f"{f}:{t}" for f, t in USER_FIELDS]) + "\n")
            for user in sorted({u for u, _, _, _ in interactions}):
                fields = users.get(user, {})
                handle.write("\t".join([user] + [_clean(fields.get(f, "")) for f, _ in USER_FIELDS]) + "\n")
    return len(interactions), len({u for u, _, _, _ in interactions}), len(used)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rporec_recbole.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sources = parser.add_subparsers(dest="source", required=True)
    movielens = sources.add_parser("movielens", help="ml-1m or ml-100k raw files")
    movielens.add_argument("--src", required=True, help="folder with ratings.dat/movies.dat or u.data/u.item")
    amazon = sources.add_parser("amazon", help="Amazon reviews 2018/2023: rating csv + metadata jsonl")
    amazon.add_argument("--ratings", required=True)
    amazon.add_argument("--meta", required=True)
    for sub in (movielens, amazon):
        sub.add_argument("--out", required=True, help="output folder; its name is the dataset name")
        sub.add_argument("--min-rating", type=float, default=None)
        sub.add_argument("--k-core", type=int, default=0)
        sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    users = None
    try:
        if args.source == "movielens":
            interactions, items, genre, users = read_movielens(args.src, args.progress)
            fields = [("movie_title", "token_seq"), ("release_year", "token"), (genre, "token_seq")]
        else:
            interactions = read_amazon_ratings(args.ratings, args.progress)
            items = {item: {"title": title} for item, title in read_amazon_titles(args.meta, args.progress).items()}
            fields = [("title", "token_seq")]
    except PrepareError as err:
        sys.exit(f"error: {err}")
    if args.min_rating is not None:
        interactions = [row for row in interactions if row[2] >= args.min_rating]
    interactions = k_core(interactions, args.k_core)
    name = os.path.basename(os.path.normpath(args.out))
    count, user_count, item_count = write_atomic(args.out, name, interactions, items, fields, users)
    files = f"{name}.inter, {name}.item" + (f", {name}.user" if users else "")
    print(f"{args.out}: {count} interactions, {user_count} users, {item_count} items "
          f"({files}); use --dataset={name} --data_path={os.path.dirname(os.path.abspath(args.out))}")


if __name__ == "__main__":
    main()
