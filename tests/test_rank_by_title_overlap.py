"""benchmarks/rank_by_title_overlap.py: title overlap of each test item with the last history item under RecBole's
split, rank bands, and the per-group table over seeds."""
import numpy as np
import pytest
from recbole.data import create_dataset

from conftest import toy_dataset_config
import rank_by_title_overlap  # benchmarks/, on the path through conftest
from rank_by_title_overlap import band_shares, group_of, rank_table, target_ranks, title_overlaps
from rporec_recbole.per_user import save_per_user

TITLES = {"1": "red nail polish", "2": "blue nail polish", "3": "face cream", "4": "eye cream", "5": "shampoo",
          "6": "red lipstick", "7": "nail art sticker kit"}
# Leave-one-out: the last item is the test item, the one before it the last of the test history.
HISTORIES = {"a": ["3", "5", "1", "2"],  # blue nail polish after red nail polish: 2 shared of 4 words
             "b": ["5", "1", "3", "4"],  # eye cream after face cream: 1 of 3
             "c": ["2", "4", "6", "5"],  # shampoo after red lipstick: none
             "d": ["4", "1", "7"]}  # nail art sticker kit after red nail polish: 1 of 6
EXPECTED_OVERLAPS = {"a": 0.5, "b": 1 / 3, "c": 0.0, "d": 1 / 6}


@pytest.fixture()
def toy_config(tmp_path):
    return toy_dataset_config(tmp_path, HISTORIES, TITLES)


def test_each_user_gets_the_title_overlap_of_their_test_item_and_last_history_item(toy_config):
    tokens = create_dataset(toy_config).field2id_token["user_id"]  # RecBole's remapping is deterministic
    overlaps = title_overlaps(toy_config, "title")
    assert {tokens[user]: value for user, value in overlaps.items()} == pytest.approx(EXPECTED_OVERLAPS)


def test_groups_split_at_no_shared_word_a_quarter_and_a_half():
    assert [group_of(v) for v in (0.0, 0.01, 0.2499, 0.25, 0.4999, 0.5, 1.0)] == [
        "0", "(0, 0.25)", "(0, 0.25)", "[0.25, 0.5)", "[0.25, 0.5)", "[0.5, 1]", "[0.5, 1]"]


def topk_rows(ranks, width=20):
    """RecBole ``rec.topk`` rows (a 0/1 column per rank, then the number of positives) for one positive per user."""
    rows = np.zeros((len(ranks), width + 1), dtype=np.int64)
    for row, rank in enumerate(ranks):
        if rank:
            rows[row, rank - 1] = 1
    rows[:, -1] = 1
    return rows


def test_target_ranks_read_the_hit_column_and_zero_beyond_the_list():
    ranks = target_ranks({"user_id": np.array([7, 8, 9]), "topk": topk_rows([1, 0, 20])})
    assert ranks == {7: 1, 8: 0, 9: 20}


def test_band_shares():
    assert band_shares([1, 3, 12, 0]) == pytest.approx([0.25, 0.25, 0.25])
    assert band_shares([10, 11]) == pytest.approx([0.0, 0.5, 0.5])


def folder_of_rows(tmp_path, ranks):
    """Rows ``{(name, seed): [rank of user 1, rank of user 2, ...]}`` written as a comparison folder's per-user files."""
    (tmp_path / "rows").mkdir()
    rows = []
    for (name, seed), row_ranks in ranks.items():
        evaluation = {"user_id": np.arange(1, len(row_ranks) + 1), "topk": topk_rows(row_ranks)}
        save_per_user(tmp_path / "rows" / f"{name}{seed}.npz", {"test": evaluation})
        rows.append({"model": name, "seed": seed, "per_user": f"{name}{seed}.npz"})
    return rows


def test_the_table_adds_ndcg_at_10_to_the_rank_bands(tmp_path):
    rows = folder_of_rows(tmp_path, {("R", 1): [1, 3, 12, 0], ("S", 1): [10, 11, 0, 0]})
    table = rank_table(rows, str(tmp_path), ["R", "S"], {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0})
    assert table[0]["values"] == pytest.approx([0.25, 0.25, 0.25, (1 + 1 / np.log2(4)) / 4])
    assert table[1]["values"] == pytest.approx([0.0, 0.25, 0.25, 0.25 / np.log2(11)])


def test_the_table_averages_each_group_over_the_seeds_a_row_ran(tmp_path):
    rows = folder_of_rows(tmp_path, {("R", 1): [1, 0, 2], ("R", 2): [0, 0, 2], ("S", 1): [5, 5, 5]})
    overlaps = {1: 0.0, 2: 0.0, 3: 0.6}
    table = rank_table(rows, str(tmp_path), ["R", "S"], overlaps)
    assert [(line["group"], line["row"], line["users"], line["seeds"]) for line in table] == [
        ("0", "R", 2, [1, 2]), ("0", "S", 2, [1]), ("[0.5, 1]", "R", 1, [1, 2]), ("[0.5, 1]", "S", 1, [1]),
        ("all", "R", 3, [1, 2]), ("all", "S", 3, [1])]
    # R on users 1, 2: rank 1 for one of two users on seed 1, none on seed 2
    assert table[0]["values"] == pytest.approx([0.25, 0.0, 0.0, 0.25])
    assert table[2]["values"] == pytest.approx([0.0, 1.0, 0.0, 1 / np.log2(3)])
    with pytest.raises(ValueError, match="no per-user results for T"):
        rank_table(rows, str(tmp_path), ["R", "T"], overlaps)


def test_an_empty_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        rank_by_title_overlap.main([str(tmp_path), "--rows=R"])
    assert "no rows in" in capsys.readouterr().err
