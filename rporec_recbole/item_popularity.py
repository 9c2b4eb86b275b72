"""How often each item occurs in the training split, and the popularity band that count falls in.

Bands double: 0, 1, 2-3, 4-7, 8-15, ... training interactions (the count's bit length), the last band open-ended.
They let a learned quantity be shared by items with as little data as each other, so a rare item borrows from the
other rare items instead of needing interactions of its own.
"""
import torch

POPULARITY_BANDS = 16  # the last band holds every count >= 2**14


def training_counts(train):
    """``(n_items,)`` long tensor: how many of each item's interactions are in the training split of a sequential
    dataset. RecBole's training rows are its augmented sequences: every training interaction is a row's target
    except each user's first, which only opens the sequence of the user's first row."""
    targets = train.inter_feat[train.iid_field]
    opens_sequence = train.inter_feat[train.config["ITEM_LIST_LENGTH_FIELD"]] == 1
    firsts = train.inter_feat[train.iid_field + train.config["LIST_SUFFIX"]][opens_sequence, 0]
    return torch.bincount(torch.cat([targets, firsts]), minlength=train.item_num)


def popularity_bands(counts, n_bands=POPULARITY_BANDS):
    """The band of each count: its bit length (0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ...), at most ``n_bands - 1``,
    i.e. how many of the band edges 1, 2, 4, ..., 2**(n_bands - 2) it reaches (exact in integers)."""
    edges = 2 ** torch.arange(n_bands - 1)
    return torch.searchsorted(edges, torch.as_tensor(counts, dtype=torch.long), right=True)
