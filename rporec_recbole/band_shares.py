"""Each popularity band's share of the text in scoring, chosen on the validation split (``item_text_share_on_valid``).

With ``collaborative_item_text_in_scoring: by_popularity`` an item scores ``u . (id_i + share[band(i)] * text_i)``;
with ``False`` (text in the encoder's input only) training scores by ID, the shares staying at 0, and the search adds
text to scoring from there.
Shares learned from the training loss rise with popularity (comparison record, session 31): under CE over all items
a rare item is a negative in nearly every step and a target in almost none, so its band learns "less text", while
text in scoring is what ranks rare test items. After stage 1 this replaces the learned shares by those that maximise
the valid metric. Scores are linear in the shares, ``base + share[band] * text``, so both parts are computed once and
each candidate costs one rank count over the stored scores.

The valid metric is sharply peaked in each share: the text part has a large component common to all users, so a
band's share acts like a bias on all its items. On Beauty (``benchmarks/band_share_scan.py``, comparison record,
session 34) moving one band by half the largest share costs up to 0.035 NDCG@10 and no move of that size gains,
so the search takes small steps around the current shares rather than a grid over the whole range.
"""

import torch

# Steps tried from a band's current share, in units of the largest learned share: the learned ones are small (~0.1-0.2)
# because the text projection, trained with them, carries the scale. With no learned share (training scored by ID, the
# shares all 0) the unit is 1: the text part and the ID embedding it is added to live in the same hidden space.
# Coordinate ascent over bands, rarest first, repeated SWEEPS times; each candidate costs one rank count (3 sweeps took
# 163 s on Beauty, session 34).
SHARE_STEPS = (-0.2, -0.1, -0.05, -0.025, -0.01, 0.01, 0.025, 0.05, 0.1, 0.2)
SWEEPS = 3


def metric_from_ranks(metric, ranks):
    """Mean of ``metric`` (RecBole's name, e.g. ``ndcg@10``) over rows whose single target sits at 0-based ``ranks``."""
    name, k = metric.lower().split("@")
    hit = ranks < int(k)
    if name in ("hit", "recall"):
        values = hit.double()
    elif name == "ndcg":
        values = hit / torch.log2(ranks.double() + 2)
    elif name == "mrr":
        values = hit / (ranks.double() + 1)
    else:
        raise ValueError(f"item_text_share_on_valid selects on hit, recall, ndcg or mrr, not {metric}")
    return values.mean().item()


class ValidScores:
    """Each valid row's full-ranking scores split into ``base`` (every share 0) and ``text`` (its factor), and the
    row's target; the padding item 0 never ranks, as in RecBole's full-sort evaluation."""

    def __init__(self, base, text, targets):
        base[:, 0] = -torch.inf
        text[:, 0] = 0.0
        self.base, self.text, self.targets = base, text, targets

    @classmethod
    @torch.no_grad()
    def collect(cls, model, valid_data):
        """Both score parts of every valid row. They are written into tensors allocated once, of the loader's
        ``sample_size`` rows (one per valid interaction in sequential full-sort evaluation): together they take
        about 2 GB on Beauty, and concatenating batches would hold them twice."""
        rows, items = valid_data.sample_size, model.n_items
        base, text = torch.empty(rows, items), torch.empty(rows, items)
        targets = torch.empty(rows, dtype=torch.long)
        filled = 0
        shares = model.item_text_score_share.detach().clone()
        model.eval()
        try:
            for interaction, _, _, positive_i in valid_data:
                interaction = interaction.to(model.item_embedding.weight.device)
                users = model(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
                batch = slice(filled, filled + len(positive_i))
                model.item_text_score_share.zero_()
                base[batch] = model.score(users)
                text[batch] = users[1] @ model.item_text_part().T
                model.item_text_score_share.copy_(shares)
                targets[batch] = positive_i
                filled = batch.stop
        finally:
            model.item_text_score_share.copy_(shares)
        if filled != rows:
            raise ValueError(f"valid data gave {filled} rows, its sample_size says {rows}")
        return cls(base, text, targets)

    def ranks(self, item_shares, rows=4096):
        """0-based rank of each row's target under per-item shares ``item_shares`` (ties count in its favour)."""
        out = []
        for start in range(0, len(self.targets), rows):
            part = slice(start, start + rows)
            scores = torch.addcmul(self.base[part], self.text[part], item_shares)
            target_scores = scores.gather(1, self.targets[part].unsqueeze(1))
            out.append((scores > target_scores).sum(1))
        return torch.cat(out)

    def metric(self, metric, band_shares, item_bands):
        """``metric`` (RecBole's name) over the rows when each item scores with its band's share in ``band_shares``."""
        return metric_from_ranks(metric, self.ranks(band_shares[item_bands]))


def choose_band_shares(valid_scores, item_bands, learned_shares, metric):
    """Coordinate ascent on the valid ``metric`` over each populated band's share, starting at the learned shares and
    trying ``SHARE_STEPS`` from the current share of one band at a time.

    Returns ``(shares, metric at the learned shares, metric at the chosen shares)``; a band moves only when the
    metric strictly improves, so the result is never below the start on valid.
    """
    shares = learned_shares.detach().float().cpu().clone()
    bands = item_bands.cpu()
    unit = shares.abs().max().item() or 1.0

    start = best = valid_scores.metric(metric, shares, bands)
    for _ in range(SWEEPS):
        for band in torch.unique(bands[1:]).tolist():  # item 0 is padding
            current = shares[band].item()
            for step in SHARE_STEPS:
                candidate = shares.clone()
                candidate[band] = current + step * unit
                value = valid_scores.metric(metric, candidate, bands)
                if value > best:
                    shares, best = candidate, value
    return shares, start, best
