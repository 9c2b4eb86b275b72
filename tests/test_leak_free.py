"""Reasoning is generated only from history strictly before each sample's target."""
import numpy as np
import pytest

from conftest import mini_model
from rporec_recbole.trainer import last_k_per_user


@pytest.fixture(scope="module")
def model_and_data(mini_movielens, tmp_path_factory):
    _, model, splits = mini_model(mini_movielens, tmp_path_factory.mktemp("run"))
    return model, splits


def test_prompts_never_show_the_target_or_anything_later(model_and_data):
    model, splits = model_and_data
    checked = 0
    for data in splits:
        feat = data._dataset.inter_feat
        seq, seq_len = feat[model.ITEM_SEQ], feat[model.ITEM_SEQ_LEN]
        times, target_times = feat["timestamp_list"], feat["timestamp"]
        targets = feat[model.ITEM_ID]
        for row, window in enumerate(model.windows(seq, seq_len)):
            n = int(seq_len[row])
            assert window == tuple(seq[row, :n].tolist())[-model.prompts.history_window:]
            assert float(times[row, :n].max()) <= float(target_times[row])  # only earlier interactions
            assert int(targets[row]) not in window  # ml-100k has no repeated user-item pairs
            target_text = model.item_texts[int(targets[row])]
            if all(model.item_texts[i] != target_text for i in window):  # ml-100k lists a few films twice
                assert target_text not in model.prompts.build(window).split("History:")[1]
            checked += 1
    assert checked > 1000


def test_test_sample_history_contains_the_valid_target(model_and_data):
    """Leave-one-out: the test prompt may show the valid item (it is earlier), never the test item."""
    model, (_, valid, test) = model_and_data
    valid_target = dict(zip(valid._dataset.inter_feat["user_id"].tolist(),
                            valid._dataset.inter_feat["item_id"].tolist()))
    feat = test._dataset.inter_feat
    for user, items, n in zip(feat["user_id"].tolist(), feat[model.ITEM_SEQ].tolist(),
                              feat[model.ITEM_SEQ_LEN].tolist()):
        assert items[n - 1] == valid_target[user]


def test_last_k_per_user_picks_the_latest_samples():
    users = np.array([1, 1, 1, 2, 2, 3])
    lengths = np.array([1, 3, 2, 5, 4, 1])
    assert last_k_per_user(users, lengths, 1).tolist() == [1, 3, 5]
    assert last_k_per_user(users, lengths, 2).tolist() == [1, 2, 3, 4, 5]
