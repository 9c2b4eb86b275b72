"""Contrastive regularisation of the collaborative user vector (beyond the paper).

After DuoRec's supervised contrastive objective (Qiu et al., "Contrastive Learning for Representation Degeneration
Problem in Sequential Recommendation", WSDM 2022): two training samples whose next item is the same should get close
user vectors, and samples with other next items are pushed apart. Each sample's user vector (the one the
recommendation loss uses) is paired with that of a random training sample of the same target, and an InfoNCE loss
over the batch's 2B vectors asks each vector to pick out its partner. Two departures from DuoRec's code: rows of the
batch that share a target with a row are removed from its negatives (DuoRec keeps them, though they are not
negatives for it), and the partner may be the sample itself (DuoRec draws among the others), which for an item with
one training sample is the only choice; the two vectors then differ by their dropout masks only.
"""
import torch
import torch.nn.functional as F
from torch import nn


class SameTargetSampler(nn.Module):
    """Draws, for each target item, a random training sample whose target is that item. A module so that it moves
    with the model; its tables are rebuilt from the training data, never saved."""

    def __init__(self, item_seq, item_seq_len, targets, n_items):
        super().__init__()
        order = torch.argsort(targets, stable=True)
        counts = torch.bincount(targets, minlength=n_items)
        self.register_buffer("item_seq", item_seq[order], persistent=False)
        self.register_buffer("item_seq_len", item_seq_len[order], persistent=False)
        # where each target's rows begin in the sorted order, and how many there are
        self.register_buffer("group_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("group_size", counts, persistent=False)

    def sample(self, targets):
        """``(item_seq, item_seq_len)`` of one random same-target training sample per entry of ``targets``."""
        sizes = self.group_size[targets]
        if bool((sizes == 0).any()):
            raise ValueError("a target item has no training sample to pair with")
        offsets = (torch.rand(len(targets), device=targets.device) * sizes).long().clamp_max(sizes - 1)
        rows = self.group_start[targets] + offsets
        return self.item_seq[rows], self.item_seq_len[rows]


def same_target_info_nce(anchors, partners, targets, temperature):
    """InfoNCE over the ``2B`` vectors ``[anchors; partners]`` with dot-product similarity: row ``i``'s positive is
    row ``i + B`` and the other way round; rows sharing a target with row ``i`` are left out of its negatives."""
    batch = len(anchors)
    vectors = torch.cat([anchors, partners])
    similarity = vectors @ vectors.T / temperature  # bf16 under the trainer's autocast: ~1e-3 relative error
    both_targets = torch.cat([targets, targets])
    partner = torch.arange(2 * batch, device=vectors.device).roll(batch)
    not_negative = both_targets.unsqueeze(0) == both_targets.unsqueeze(1)  # itself, its partner, same-target rows
    not_negative[torch.arange(2 * batch, device=vectors.device), partner] = False
    return F.cross_entropy(similarity.masked_fill(not_negative, float("-inf")), partner)
