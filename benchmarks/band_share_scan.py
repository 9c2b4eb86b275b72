"""The valid metric around a run's text shares per popularity band: one band moved at a time.

    python benchmarks/band_share_scan.py --checkpoint=saved/compare-runs/<row>/<RPORec-time>

For a run with ``collaborative_item_text_in_scoring: by_popularity``, prints for each populated band its item count,
its valid targets, and the change of the valid metric when that band's share alone moves by each of ``OFFSETS`` (in
units of the largest share) while every other band keeps the checkpoint's share. It shows how peaked the surface is
that ``item_text_share_on_valid`` climbs. Valid only: nothing here looks at the test split.
"""
import argparse
import sys

import torch

from rporec_recbole.band_shares import SHARE_STEPS, ValidScores
from rporec_recbole.quick_start import load_run

OFFSETS = (-1.0, -0.5) + SHARE_STEPS + (0.5, 1.0, 2.0)  # the search's steps and some far beyond them


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the checkpoint folder of a by_popularity run")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv
    config, _, (_, valid_data, _), model = load_run(args.checkpoint)
    if config["collaborative_item_text_in_scoring"] != "by_popularity":
        sys.exit("refused: the run does not score items with a text share per popularity band")
    metric = config["valid_metric"].lower()
    scores = ValidScores.collect(model, valid_data)
    shares = model.item_text_score_share.detach().float().cpu()
    bands = model.item_popularity_band.cpu()
    unit = shares.abs().max().item() or 1.0
    at_checkpoint = scores.metric(metric, shares, bands)
    print(f"{metric} on valid at the checkpoint's shares: {at_checkpoint:.5f}; unit (the largest share) {unit:.4f}")
    print(f"| band | items | valid targets | share | " + " | ".join(f"{m:+g}" for m in OFFSETS) + " |")
    print("|---" * (4 + len(OFFSETS)) + "|")
    target_bands = bands[scores.targets]
    for band in torch.unique(bands[1:]).tolist():  # item 0 is padding
        cells = []
        for offset in OFFSETS:
            candidate = shares.clone()
            candidate[band] += offset * unit
            value = scores.metric(metric, candidate, bands)
            cells.append(f"{value - at_checkpoint:+.5f}")
        print(f"| {band} | {int((bands[1:] == band).sum())} | {int((target_bands == band).sum())} | "
              f"{shares[band].item():.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
