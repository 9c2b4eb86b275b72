import csv
import json
import os

import yaml

from conftest import mini_config
from rporec_recbole import config
from rporec_recbole.comparison import main, row_command, row_key


def test_comparison_end_to_end_and_resume(mini_movielens, tmp_path, capsys):
    config_file = tmp_path / "mini.yaml"
    config_file.write_text(yaml.safe_dump(mini_config(mini_movielens, tmp_path, train_batch_size=64 * 49)))
    out = tmp_path / "compare"
    argv = ["--models=SASRec,RPORec-no-reasoning", "--dataset=ml-mini", f"--out={out}",
            f"--config_files={config_file}", "--epochs=1"]
    main(argv)
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["SASRec", "RPORec-no-reasoning"]
    assert all(r["dataset"] == "ml-mini" and r["seed"] == 2020 and 0 <= r["ndcg@10"] <= 1 for r in rows)
    assert all(r["peak_memory_mb"] > 100 and r["train_seconds"] > 0 for r in rows)
    assert all(r["device"] == f"cpu ({os.cpu_count()} cores)" for r in rows)  # whose hardware the times are
    with open(out / "results.csv") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [float(r["ndcg@10"]) for r in csv_rows] == [r["ndcg@10"] for r in rows]
    table = (out / "results.md").read_text()
    assert f"| SASRec | 2020 | {rows[0]['recall@10']:.4f} | {rows[0]['ndcg@10']:.4f} |" in table
    assert "Best baseline by test NDCG@10: SASRec" in table
    assert table.count(f"| cpu ({os.cpu_count()} cores) |") == 2
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rows[1]["command"] == row_command("RPORec-no-reasoning", "ml-mini", 2020, [str(config_file)],
                                             {"epochs": 1})
    assert "--use_reasoning=False" in rows[1]["command"]

    capsys.readouterr()
    main(argv)  # everything cached: nothing reruns
    printed = capsys.readouterr().out
    assert printed.count("[compare] reusing") == 2 and "[compare] running" not in printed


def test_row_key_follows_the_plugin_defaults_that_apply_to_the_row(tmp_path, monkeypatch):
    """A cached row must not be reused after a default it ran with changed (regression: the key held only the
    command-line overrides and config files, so an edited properties/RPORec.yaml reused stale rows)."""
    (tmp_path / "dataset").mkdir()
    model_yaml, dataset_yaml = tmp_path / "RPORec.yaml", tmp_path / "dataset" / "ml-mini.yaml"
    model_yaml.write_text("epochs: 10\n")
    dataset_yaml.write_text("topk: [10]\n")
    monkeypatch.setattr(config, "PROPERTIES_DIR", str(tmp_path))
    keys = lambda: [row_key(name, "ml-mini", 2020, None, {}) for name in ("RPORec-stage1", "SASRec")]
    rporec, sasrec = keys()
    model_yaml.write_text("epochs: 11\n")
    assert keys() == [keys()[0], sasrec] and keys()[0] != rporec  # only the rows of that model change
    rporec = keys()[0]
    dataset_yaml.write_text("topk: [20]\n")
    assert keys()[0] != rporec and keys()[1] != sasrec  # a dataset default applies to every model on it
