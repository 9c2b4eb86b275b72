"""Popularity bands of items: doubling bands of training counts (rporec_recbole/item_popularity.py)."""
import torch

from rporec_recbole.item_popularity import POPULARITY_BANDS, popularity_bands


def test_bands_double_and_the_last_band_is_open_ended():
    counts = [0, 1, 2, 3, 4, 7, 8, 15, 16, 2 ** 14 - 1, 2 ** 14, 10 ** 6, 2 ** 31 - 1]
    assert popularity_bands(torch.tensor(counts)).tolist() == [0, 1, 2, 2, 3, 3, 4, 4, 5, 14, 15, 15, 15]
    assert POPULARITY_BANDS == 16


def test_a_smaller_number_of_bands_caps_at_its_last_band():
    assert popularity_bands([0, 1, 5, 100], n_bands=3).tolist() == [0, 1, 2, 2]
