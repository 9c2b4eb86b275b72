"""Resident memory that ``ValidScores.collect`` (the band-share search, ``item_text_share_on_valid``) adds, against
the size of the two score tables it keeps, at Beauty's shape (22,363 valid rows x 12,102 items by default).

A stand-in model gives random scores of that shape in batches, so no training or data is needed: the memory is set
by the shape alone. Prints ``peak added / tables kept``: 1.0 means the tables are the only cost; concatenating
per-batch lists held them twice (session 41's Beauty row peaked at 7.1 GB in the search, 3.7 GB in training).

    python benchmarks/band_share_memory.py [--rows=22363 --items=12102 --batch=4096]
"""
import argparse
import json
import os
import sys

import torch

from rporec_recbole.band_shares import ValidScores
from rporec_recbole.timing import PhaseTimer, machine_description, resident_mb

_HERE = os.path.dirname(os.path.abspath(__file__))


class StandInScorer(torch.nn.Module):
    """What ``collect`` reads of an RPORec model: user vectors, ``score`` and the items' text part."""

    ITEM_SEQ, ITEM_SEQ_LEN = "item_seq", "item_seq_len"

    def __init__(self, n_items, hidden=64):
        super().__init__()
        self.n_items = n_items
        self.item_embedding = torch.nn.Embedding(n_items, hidden)
        self.text = torch.nn.Parameter(torch.randn(n_items, hidden))
        self.item_text_score_share = torch.nn.Parameter(torch.full((4,), 0.2), requires_grad=False)

    def forward(self, item_seq, item_seq_len):
        return self.item_embedding(item_seq).mean(1), self.item_embedding(item_seq).sum(1)

    def item_text_part(self):
        return self.text

    def score(self, users):
        return users[0] @ (self.item_embedding.weight + self.item_text_score_share[0] * self.text).T


class StandInBatch(dict):
    def to(self, device):
        return self


class StandInValidData:
    """Full-sort valid batches as RecBole yields them: (interaction, None, positive_u, positive_i)."""

    def __init__(self, rows, n_items, batch, seq_len=5, sample_size=None):
        self.rows, self.n_items, self.batch, self.seq_len = rows, n_items, batch, seq_len
        self.sample_size = rows if sample_size is None else sample_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for start in range(0, self.rows, self.batch):
            size = min(self.batch, self.rows - start)
            seq = torch.randint(1, self.n_items, (size, self.seq_len), generator=generator)
            interaction = StandInBatch(item_seq=seq, item_seq_len=torch.full((size,), self.seq_len))
            yield interaction, None, torch.arange(size), torch.randint(1, self.n_items, (size,), generator=generator)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=22363)
    parser.add_argument("--items", type=int, default=12102)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--output", default=os.path.join(_HERE, "band_share_memory.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = StandInScorer(args.items)
    data = StandInValidData(args.rows, args.items, args.batch)
    timer = PhaseTimer()
    resident_before = resident_mb()
    with timer("collect"):
        scores = ValidScores.collect(model, data)
    tables_mb = (scores.base.nbytes + scores.text.nbytes) / 2**20
    peak_added_mb = timer.phases["collect"]["peak_rss_mb"] - resident_before
    record = {"rows": args.rows, "items": args.items, "batch": args.batch, "tables_mb": round(tables_mb, 1),
              "peak_added_mb": round(peak_added_mb, 1), "peak_added_over_tables": round(peak_added_mb / tables_mb, 2),
              "command": "python " + " ".join(sys.argv), "machine": machine_description()}
    print(json.dumps(record, indent=1))
    with open(args.output, "w") as handle:
        json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
