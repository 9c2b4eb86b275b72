"""benchmarks/gain_by_item_count.py: training counts of test items under RecBole's split, and per-group paired tests."""
import pytest
from recbole.data import create_dataset

import gain_by_item_count  # benchmarks/, on the path through conftest
from conftest import toy_dataset_config
from gain_by_item_count import counts_of_held_out_items, gain_by_item_count as by_count, group_labels
from rporec_recbole.item_popularity import training_counts
from rporec_recbole.per_user import paired_test

# Each user's items in time order: leave-one-out puts the last in test, the one before in valid, the rest in train.
HISTORIES = {"a": ["1", "2", "3", "4", "5"], "b": ["5", "1", "2", "6", "3"], "c": ["3", "1", "4", "6", "2"],
             "d": ["2", "3", "1", "4"]}
# Training interactions: 1 (a, b, c), 2 (a, b, d), 3 (a, c, d), 4 (c), 5 (b: its first item, never a target).
EXPECTED_TRAINING_COUNTS = {"1": 3, "2": 3, "3": 3, "4": 1, "5": 1, "6": 0}
EXPECTED_TEST_ITEM_COUNTS = {"a": 1, "b": 3, "c": 3, "d": 1}  # test items 5, 3, 2, 4
EXPECTED_VALID_ITEM_COUNTS = {"a": 1, "b": 0, "c": 0, "d": 3}  # valid items 4, 6, 6, 1


@pytest.fixture()
def toy_config(tmp_path):
    return toy_dataset_config(tmp_path, HISTORIES)


def test_training_counts_count_every_training_interaction_first_items_included(toy_config):
    dataset = create_dataset(toy_config)
    train, _, _ = dataset.build()
    counts = training_counts(train)
    tokens = dataset.field2id_token["item_id"]
    assert {tokens[item]: int(counts[item]) for item in range(1, len(tokens))} == EXPECTED_TRAINING_COUNTS


def test_each_user_gets_the_training_count_of_their_test_item(toy_config):
    tokens = create_dataset(toy_config).field2id_token["user_id"]  # RecBole's remapping is deterministic
    counts = counts_of_held_out_items(toy_config)
    assert {tokens[user]: count for user, count in counts.items()} == EXPECTED_TEST_ITEM_COUNTS


def test_with_split_valid_each_user_gets_the_training_count_of_their_valid_item(toy_config):
    tokens = create_dataset(toy_config).field2id_token["user_id"]
    counts = counts_of_held_out_items(toy_config, "valid")
    assert {tokens[user]: count for user, count in counts.items()} == EXPECTED_VALID_ITEM_COUNTS


def test_users_are_grouped_by_count_and_each_group_has_its_own_paired_test():
    counts = {1: 0, 2: 1, 3: 4, 4: 4, 5: 9, 6: 30}  # groups 0-1: users 1, 2; 2-4: 3, 4; 5+: 5, 6 (edges 2, 5)
    row = {1: 0.0, 2: 0.5, 3: 1.0, 4: 0.2, 5: 0.3, 6: 0.1}
    against = {1: 0.1, 2: 0.1, 3: 0.2, 4: 0.2, 5: 0.3, 6: 0.3}
    results = {"R": {2020: row, 2021: row}, "A": {2020: against, 2022: {u: 0.0 for u in against}}}
    table = by_count(results, "R", "A", counts, edges=(2, 5))
    assert [g["group"] for g in table] == ["0-1", "2-4", "5+", "all"]
    assert all(g["seeds"] == [2020] for g in table)  # the only seed both rows ran
    for group, users in zip(table, ([1, 2], [3, 4], [5, 6], [1, 2, 3, 4, 5, 6])):
        expected = paired_test({u: row[u] for u in users}, {u: against[u] for u in users})
        assert (group["users"], group["row"], group["against"], group["p_value"]) == expected
    assert table[0]["row"] == pytest.approx(0.25) and table[2]["against"] == pytest.approx(0.3)


def test_empty_groups_are_left_out_and_rows_without_a_shared_seed_refused():
    results = {"R": {1: {1: 0.5, 2: 0.0}}, "A": {1: {1: 0.0, 2: 0.5}}, "B": {2: {1: 0.1, 2: 0.1}}}
    table = by_count(results, "R", "A", {1: 100, 2: 7}, edges=(5, 10, 20))
    assert [(g["group"], g["users"]) for g in table] == [("5-9", 1), ("20+", 1), ("all", 2)]
    with pytest.raises(ValueError, match="share no seed"):
        by_count(results, "R", "B", {1: 100, 2: 7})


def test_group_labels_cover_every_count_once():
    assert group_labels((5, 10, 20)) == ["0-4", "5-9", "10-19", "20+"]


@pytest.mark.parametrize("edges", ["5,5", "10,5", "0,5", "5,x"])
def test_edges_must_be_increasing_positive_counts(edges, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gain_by_item_count.main([str(tmp_path), "--pair=R:A", f"--edges={edges}"])
    assert "--edges must be increasing positive counts" in capsys.readouterr().err


def test_valid_edges_pass_the_check(tmp_path, capsys):
    """The control of the test above: the same empty folder stops later, at its missing rows."""
    with pytest.raises(SystemExit):
        gain_by_item_count.main([str(tmp_path), "--pair=R:A", "--edges=5,10"])
    err = capsys.readouterr().err
    assert "no rows in" in err and "--edges must be" not in err
