"""Per-user test and valid results for a comparison row that ran before rows kept them, rebuilt from its checkpoint.

    python benchmarks/per_user_from_checkpoint.py --row=benchmarks/compare-ml100k/rows/<row>.json \
        --checkpoint=saved/<Model>-<time>

Rebuilds the run from the checkpoint's saved config, evaluates the test and valid splits with the row's own
trainer, and writes nothing unless every test metric and the valid NDCG@10 equal the row's (so the per-user results
are those of the row). Then it writes the row's ``.users.npz`` and ``.valid-users.npz`` and adds ``per_user``,
``per_user_valid`` and ``checkpoint`` to its json. A row with RL is refused: its stage-2 test needs the tuned
policy, which a stage-1 checkpoint does not hold.
"""
import argparse
import json
import shlex
import sys

from rporec_recbole.checkpoint import atomic_write_json, load_config_dict, release_unused_folder
from rporec_recbole.comparison import parse_overrides, save_row_per_user
from rporec_recbole.per_user import PerUserRecorder
from rporec_recbole.quick_start import load_run
from rporec_recbole.registry import get_trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", required=True, help="the row's json under <comparison>/rows/")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint folder the row's run saved")
    args = parser.parse_args()
    with open(args.row) as handle:
        row = json.load(handle)
    saved = load_config_dict(args.checkpoint)
    if saved.get("rl"):
        sys.exit("refused: the row ran RL; its stage-2 test needs the tuned policy")
    row_model = parse_overrides(shlex.split(row["command"])[2:])[0]["model"]  # a row's name may carry a --suffix
    if (saved["model"], saved["dataset"], saved["seed"]) != (row_model, row["dataset"], row["seed"]):
        sys.exit(f"refused: the checkpoint is {saved['model']} on {saved['dataset']}, seed {saved['seed']}")
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv
    config, _, (_, valid_data, test_data), model = load_run(args.checkpoint)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    recorder = PerUserRecorder(trainer)
    result = trainer.evaluate(test_data, load_best_model=False)
    valid_ndcg = float(trainer.evaluate(valid_data, load_best_model=False)["ndcg@10"])
    release_unused_folder(trainer.saved_model_file)  # the trainer claimed a checkpoint folder of its own
    differ = {k: (float(v), row[k]) for k, v in result.items() if k in row and round(float(v), 4) != row[k]}
    if round(valid_ndcg, 4) != round(row["valid_ndcg@10"], 4):
        differ["valid_ndcg@10"] = (valid_ndcg, row["valid_ndcg@10"])
    if differ:
        sys.exit(f"refused: this checkpoint's metrics differ from the row's (checkpoint, row): {differ}")
    test, valid = recorder.evaluations
    save_row_per_user(row, args.row, "test", {"test": test})
    save_row_per_user(row, args.row, "valid", {"valid": valid})
    row["checkpoint"] = args.checkpoint  # shown to hold the row's weights
    atomic_write_json(args.row, row)
    print(f"{len(test['user_id'])} test and {len(valid['user_id'])} valid users, metrics equal to the row's -> "
          f"{row['per_user']}, {row['per_user_valid']}")


if __name__ == "__main__":
    main()
