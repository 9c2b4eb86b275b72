"""prepare: raw MovieLens / Amazon files -> RecBole atomic files that RecBole loads."""
import pytest
from recbole.data import create_dataset

from rporec_recbole import Config
from rporec_recbole.prepare import k_core, main


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_ml1m_raw_files_become_atomic_files_that_recbole_loads(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ratings = [f"{u}::{i}::{(u + i) % 5 + 1}::{978300000 + 10 * u + i}" for u in range(1, 7) for i in range(1, 6)]
    (raw / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    movies = ["1::Toy Story (1995)::Animation|Children's|Comedy", "2::Amélie (2001)::Comedy|Romance",
              "3::Untitled::Drama", "4::Heat (1995)::Action|Crime|Thriller", "5::Up (2009)::Animation"]
    (raw / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    out = tmp_path / "data" / "ml-1m"
    main(["movielens", f"--src={raw}", f"--out={out}"])
    item_lines = _lines(out / "ml-1m.item")
    assert item_lines[0] == "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq"
    assert "2\tAmélie\t2001\tComedy Romance" in item_lines and "3\tUntitled\t\tDrama" in item_lines
    assert len(_lines(out / "ml-1m.inter")) == 1 + 30

    config = Config(model="SASRec", dataset="ml-1m", config_dict={
        "data_path": str(tmp_path / "data"), "train_neg_sample_args": None, "show_progress": False})
    dataset = create_dataset(config)
    assert dataset.user_num == 7 and dataset.item_num == 6  # RecBole counts the padding id too
    titles = dataset.item_feat["movie_title"]
    assert titles.shape[0] == 6


def test_ml1m_users_become_a_user_file_with_the_remaining_users(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ratings = [f"{u}::{i}::5::{978300000 + 10 * u + i}" for u in (1, 2) for i in (1, 2)]
    (raw / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    (raw / "movies.dat").write_text("1::A (1990)::Drama\n2::B (1991)::Comedy\n", encoding="latin-1")
    (raw / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    out = tmp_path / "data" / "ml-1m"
    main(["movielens", f"--src={raw}", f"--out={out}", "--no-progress"])
    assert _lines(out / "ml-1m.user") == ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
                                          "1\t1\tF\t10\t48067", "2\t56\tM\t16\t70072"]  # user 3 rated nothing
    config = Config(model="SASRec", dataset="ml-1m", config_dict={
        "data_path": str(tmp_path / "data"), "train_neg_sample_args": None, "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "user": ["user_id", "gender", "age"]}})
    dataset = create_dataset(config)
    assert dataset.user_feat is not None and "gender" in dataset.user_feat.columns


def test_progress_bars_while_reading_unless_turned_off(tmp_path, capsys):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x\n", encoding="latin-1")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
    main(["movielens", f"--src={tmp_path}", f"--out={tmp_path / 'a' / 'ml'}"])
    err = capsys.readouterr().err
    assert "u.data: 100%" in err and "u.item: 100%" in err and "u.user: 100%" in err
    main(["movielens", f"--src={tmp_path}", f"--out={tmp_path / 'b' / 'ml'}", "--no-progress"])
    assert capsys.readouterr().err == ""
    assert _lines(tmp_path / "b" / "ml" / "ml.user")[1:] == ["1\t24\tM\ttechnician\t85711"]


def test_ml100k_raw_files_keep_genres_from_flags(tmp_path):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n")
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
                                     "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|0\n", encoding="latin-1")
    main(["movielens", f"--src={tmp_path}", f"--out={tmp_path / 'out' / 'ml-small'}"])
    assert _lines(tmp_path / "out" / "ml-small" / "ml-small.item")[1:] == ["1\tToy Story\t1995\tComedy",
                                                                           "2\tGoldenEye\t1995\tAction"]


def test_amazon_2018_csv_and_2014_literal_metadata_with_filters(tmp_path):
    rows = [f"I{i},U{u},{5 if (u + i) % 4 else 2},{1000 + u * 10 + i}" for u in range(6) for i in range(5)]
    rows.append("Ilonely,U0,5,999")  # one interaction only: gone in the 2-core
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    meta = ["{'asin': 'I0', 'title': 'Lip\\tBalm <answer>x</answer>'}",  # 2014: Python literal, tab in title
            '{"asin": "I1", "title": "Face Cream"}', '{"asin": "I2"}']
    (tmp_path / "meta.jsonl").write_text("\n".join(meta) + "\n")
    out = tmp_path / "Beauty"
    main(["amazon", f"--ratings={tmp_path / 'ratings.csv'}", f"--meta={tmp_path / 'meta.jsonl'}",
          f"--out={out}", "--min-rating=4", "--k-core=2"])
    inter = [line.split("\t") for line in _lines(out / "Beauty.inter")[1:]]
    assert all(float(rating) >= 4 for _, _, rating, _ in inter)
    assert "Ilonely" not in {item for _, item, _, _ in inter}
    items = dict(line.split("\t") for line in _lines(out / "Beauty.item")[1:])
    assert items["I0"] == "Lip Balm <answer>x</answer>" and items["I1"] == "Face Cream" and items["I2"] == ""
    users = [user for user, _, _, _ in inter]
    assert users == sorted(users)  # grouped by user, each user's items in time order
    for user in set(users):
        times = [float(t) for u, _, _, t in inter if u == user]
        assert times == sorted(times)


def test_amazon_2023_header_columns(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,parent_asin,rating,timestamp\nA,P1,5.0,1600000000000\n"
                                    "A,P2,4.0,1600000000001\n")
    (tmp_path / "m.jsonl").write_text('{"parent_asin": "P1", "title": "Serum"}\n')
    main(["amazon", f"--ratings={tmp_path / 'r.csv'}", f"--meta={tmp_path / 'm.jsonl'}", f"--out={tmp_path / 'A'}"])
    assert _lines(tmp_path / "A" / "A.inter")[1:] == ["A\tP1\t5\t1600000000000", "A\tP2\t4\t1600000000001"]


def test_k_core_repeats_until_stable():
    rows = [("u1", "a", 5, 1), ("u1", "b", 5, 2), ("u2", "a", 5, 1), ("u2", "c", 5, 2), ("u3", "a", 5, 1)]
    # 2-core: item b and c have 1 interaction -> dropped -> u1, u2 left with 1 -> dropped -> a left with u3 only
    assert k_core(rows, 2) == []


@pytest.mark.parametrize("content, message", [
    ("1::2::x::978300000\n", "rating and timestamp must be numbers"),
    ("\n1::2::5\n", "expected UserID::MovieID::Rating::Timestamp"),  # blank lines still count
])
def test_bad_raw_lines_name_the_file_and_line(tmp_path, capsys, content, message):
    (tmp_path / "ratings.dat").write_text(content)
    (tmp_path / "movies.dat").write_text("2::X (1999)::Drama\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["movielens", f"--src={tmp_path}", f"--out={tmp_path / 'o'}"])
    line = content.count("\n")
    assert f"ratings.dat:{line}: {message}" in str(exit_info.value)


def test_missing_input_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="neither ratings.dat/movies.dat"):
        main(["movielens", f"--src={tmp_path}", f"--out={tmp_path / 'o'}"])
    with pytest.raises(SystemExit, match="nope.csv not found"):
        main(["amazon", f"--ratings={tmp_path / 'nope.csv'}", f"--meta={tmp_path / 'm'}", f"--out={tmp_path / 'o'}"])
