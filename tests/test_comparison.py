import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BENCHMARKS, REPOSITORY, mini_config
import write_table  # benchmarks/, on the path through conftest
from rporec_recbole import comparison, config
from rporec_recbole.comparison import (SETTINGS_ADDED_LATER, SETTINGS_READ_ONLY_WHEN_ON,
                                       SETTINGS_WITHOUT_EFFECT_ON_RESULTS, TABLE_METRICS, ablation_pairs, best_baseline,
                                       chart_figure, check_folder_rows, command_key, folder_rows, headline, main,
                                       make_row, markdown_table, parse_overrides, per_user_results,
                                       ratio_on_shared_seeds, reproduces, row_command, row_key, row_run_settings,
                                       row_spec, SELECTION_VALID, significance, selected_on_valid, significance_table,
                                       summarize, write_outputs)
from rporec_recbole.per_user import load_per_user, per_user_ndcg, save_per_user
from rporec_recbole.timing import cpu_model


def test_comparison_end_to_end_and_resume(mini_movielens, tmp_path, capsys):
    config_file = tmp_path / "mini.yaml"
    config_file.write_text(yaml.safe_dump(mini_config(mini_movielens, tmp_path)))
    out = tmp_path / "compare"
    argv = ["--models=SASRec,RPORec-no-reasoning", "--dataset=ml-mini", f"--out={out}",
            f"--config_files={config_file}", "--epochs=1"]
    main(argv)
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["SASRec", "RPORec-no-reasoning"]
    assert all(r["dataset"] == "ml-mini" and r["seed"] == 2020 and 0 <= r["ndcg@10"] <= 1 for r in rows)
    assert all(r["peak_memory_mb"] > 100 and r["train_seconds"] > 0 for r in rows)
    assert all((r["epochs"], r["best_epoch"]) == (1, 0) for r in rows)  # --epochs=1: one epoch, tested
    # whose hardware the times are: the CPU model too, as this project's machines are AMD EPYC or Intel Xeon
    assert all(r["device"] == f"cpu ({cpu_model()}, {os.cpu_count()} cores)" for r in rows)
    assert all(reproduces(r) for r in rows)  # each row's command runs it again
    with open(out / "results.csv") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [float(r["ndcg@10"]) for r in csv_rows] == [r["ndcg@10"] for r in rows]
    table = (out / "results.md").read_text()
    assert (f"| SASRec | 2020 | 1 | {rows[0]['valid_ndcg@10']:.4f} | {rows[0]['recall@10']:.4f} | "
            f"{rows[0]['ndcg@10']:.4f} |") in table
    assert "Best baseline by test NDCG@10: SASRec" in table
    assert table.count(f"| cpu ({cpu_model()}, {os.cpu_count()} cores) |") == 2
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rows[1]["command"] == row_command("RPORec-no-reasoning", "ml-mini", 2020, [str(config_file)],
                                             {"epochs": 1})
    assert "--use_reasoning=False" in rows[1]["command"]

    for row in rows:  # each test user's hits are kept, and they average to the reported metric
        ndcg = per_user_ndcg(load_per_user(str(out / "rows" / row["per_user"]))["test"], k=10)
        assert len(ndcg) == 40 and round(sum(ndcg.values()) / len(ndcg), 4) == row["ndcg@10"]
    valid = per_user_results(rows, str(out), split="valid")  # each valid user's too, in a file of their own
    for row in rows:
        ndcg = valid[row["model"]][2020]
        assert row["per_user_valid"] == row["per_user"].replace(".users.npz", ".valid-users.npz")
        assert len(ndcg) == 40 and round(sum(ndcg.values()) / len(ndcg), 4) == round(row["valid_ndcg@10"], 4)
    old_row = {k: v for k, v in rows[0].items() if k != "per_user_valid"}  # as rows run before session 40
    assert per_user_results([old_row], str(out), split="valid") == {}
    assert list(per_user_results([old_row], str(out))) == [old_row["model"]]
    tests = json.loads((out / "significance.json").read_text())
    assert [(t["row"], t["against"], t["users"]) for t in tests] == [("RPORec-no-reasoning", "SASRec", 40)]
    assert f"| RPORec-no-reasoning | SASRec | 2020 | 40 | {rows[1]['ndcg@10']:.4f} | {rows[0]['ndcg@10']:.4f} |" in table

    _per_user_from_checkpoint_rebuilds_or_refuses(out / "rows" / rows[0]["per_user"], rows[0])

    capsys.readouterr()
    main(argv)  # everything cached: nothing reruns
    printed = capsys.readouterr().out
    assert printed.count("[compare] reusing") == 2 and "[compare] running" not in printed

    # --cached-only writes the table of what ran and never starts a row that did not
    without_models = [a for a in argv if not a.startswith("--models")]
    main(without_models + ["--models=SASRec,GRU4Rec,RPORec-no-reasoning", "--cached-only"])
    printed = capsys.readouterr().out
    assert "not run, skipped: GRU4Rec seed 2020" in printed and "[compare] running" not in printed
    assert [r["model"] for r in json.loads((out / "results.json").read_text())] == ["SASRec", "RPORec-no-reasoning"]
    with pytest.raises(SystemExit):
        main(without_models + ["--models=GRU4Rec", "--cached-only"])
    assert not list((out / "rows").glob("GRU4Rec*"))
    # the folder's table keeps the rows other commands ran (regression: a command wrote a table of its rows only)
    main(without_models + ["--models=SASRec"])
    assert [r["model"] for r in json.loads((out / "results.json").read_text())] == ["SASRec", "RPORec-no-reasoning"]
    assert "| RPORec-no-reasoning | SASRec |" in (out / "results.md").read_text()
    # a row its command would not run again stops the comparison before anything runs
    row_file = out / "rows" / rows[0]["per_user"].replace(".users.npz", ".json")
    row_file.write_text(json.dumps({**rows[0], "key": "stale"}))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(without_models + ["--models=GRU4Rec"])
    assert "SASRec seed 2020" in capsys.readouterr().err and not list((out / "rows").glob("GRU4Rec*"))


def _per_user_from_checkpoint_rebuilds_or_refuses(per_user_file, row):
    """benchmarks/per_user_from_checkpoint.py (for rows run before per-user results were kept) writes the same
    per-user test and valid results from the row's checkpoint, and nothing when the checkpoint's test metrics or
    valid NDCG@10 are not the row's."""
    script = os.path.join(BENCHMARKS, "per_user_from_checkpoint.py")
    row_file = str(per_user_file).replace(".users.npz", ".json")
    valid_file = str(per_user_file).replace(".users.npz", ".valid-users.npz")
    # named as a row run with --suffix (regression: the model was looked up from the name, and such rows refused)
    original, row = row, {**row, "model": row["model"] + "-suffixed"}
    kept = {"test": load_per_user(str(per_user_file))["test"], "valid": load_per_user(valid_file)["valid"]}
    os.remove(per_user_file)
    os.remove(valid_file)
    as_before_session_40 = {k: v for k, v in row.items() if k not in ("per_user", "per_user_valid")}
    run = lambda: subprocess.run([sys.executable, script, f"--row={row_file}", f"--checkpoint={row['checkpoint']}"],
                                 capture_output=True, text=True, timeout=300)
    for tampered in ({"ndcg@10": row["ndcg@10"] + 0.1}, {"valid_ndcg@10": row["valid_ndcg@10"] + 0.1}):
        with open(row_file, "w") as handle:
            json.dump({**as_before_session_40, **tampered}, handle)
        refused = run()
        assert refused.returncode != 0 and "differ from the row's" in refused.stderr and list(tampered)[0] in \
            refused.stderr
        assert not os.path.exists(per_user_file) and not os.path.exists(valid_file)
    with open(row_file, "w") as handle:
        json.dump(as_before_session_40, handle)
    assert run().returncode == 0
    rebuilt = {"test": load_per_user(str(per_user_file))["test"], "valid": load_per_user(valid_file)["valid"]}
    for split in ("test", "valid"):
        np.testing.assert_array_equal(rebuilt[split]["topk"], kept[split]["topk"])
        np.testing.assert_array_equal(rebuilt[split]["user_id"], kept[split]["user_id"])
    assert json.loads(open(row_file).read()) == row
    with open(row_file, "w") as handle:  # the comparison goes on with the row as it ran
        json.dump(original, handle)


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
    assert keys()[1] == sasrec and keys()[0] != rporec  # only the rows of that model change
    rporec = keys()[0]
    dataset_yaml.write_text("topk: [20]\n")
    assert keys()[0] != rporec and keys()[1] != sasrec  # a dataset default applies to every model on it
    rporec = keys()[0]
    model_yaml.write_text("# a comment\nepochs: 11  # the same value\n")
    assert keys()[0] == rporec  # the key follows values, not the yaml's text
    model_yaml.write_text("epochs: 12\n")
    explicit = row_key("RPORec-stage1", "ml-mini", 2020, None, {"epochs": 11})
    assert explicit == rporec  # a row that sets the old default explicitly is still the row that ran with it


def test_a_new_setting_at_its_original_value_keeps_the_cached_rows_keys(tmp_path, monkeypatch):
    """Adding an option must not rerun every cached row (sessions 9 and 10 re-keyed them by hand); changing its
    default later must."""
    monkeypatch.setattr(config, "PROPERTIES_DIR", str(tmp_path))
    model_yaml = tmp_path / "RPORec.yaml"
    model_yaml.write_text("epochs: 10\n")
    before = row_key("RPORec-stage1", "ml-mini", 2020, None, {})
    model_yaml.write_text("epochs: 10\ntext_embedder: llm\n")
    assert row_key("RPORec-stage1", "ml-mini", 2020, None, {}) == before
    assert row_key("RPORec-stage1", "ml-mini", 2020, None, {"text_embedder": "llm"}) == before
    model_yaml.write_text("epochs: 10\ntext_embedder: embedded:all-minilm-l6-v2\n")
    assert row_key("RPORec-stage1", "ml-mini", 2020, None, {}) != before
    assert row_key("RPORec-stage1", "ml-mini", 2020, None, {"text_embedder": "llm"}) == before


def test_a_setting_read_only_when_its_switch_is_on_keeps_the_key_while_it_is_off():
    off = row_key("RPORec-no-semantic", "ml-mini", 2020, None, {})
    assert row_key("RPORec-no-semantic", "ml-mini", 2020, None, {"contrastive_temperature": 0.5}) == off
    on = row_key("RPORec-no-semantic", "ml-mini", 2020, None, {"contrastive_weight": 0.1})
    assert on != off
    assert row_key("RPORec-no-semantic", "ml-mini", 2020, None,
                   {"contrastive_weight": 0.1, "contrastive_temperature": 0.5}) != on


def test_settings_added_later_are_settings_of_the_plugin():
    # a misspelt or removed name here would silently stop guarding the cache
    with open(os.path.join(config.PROPERTIES_DIR, "RPORec.yaml")) as handle:
        defaults = yaml.safe_load(handle)
    named = set(SETTINGS_ADDED_LATER) | SETTINGS_WITHOUT_EFFECT_ON_RESULTS
    assert named | set(SETTINGS_READ_ONLY_WHEN_ON) | set(SETTINGS_READ_ONLY_WHEN_ON.values()) <= set(defaults)


def test_a_setting_without_effect_on_results_keeps_the_rows_cached():
    # regression: adding rl_trim_heap_mb (memory only) to the plugin's yaml changed the key of every RPORec row
    before = row_key("RPORec-no-reasoning", "ml-mini", 2020, None, {})
    assert row_key("RPORec-no-reasoning", "ml-mini", 2020, None, {"rl_trim_heap_mb": None}) == before
    assert row_key("RPORec-no-reasoning", "ml-mini", 2020, None, {"rl_trim_heap_mb": 0}) == before
    assert row_key("RPORec-no-reasoning", "ml-mini", 2020, None, {"rl_beta": 0.01}) != before


def _rec_topk(hit_ranks, max_k=20):
    topk = np.zeros((len(hit_ranks), max_k + 1), dtype=np.int32)
    topk[np.arange(len(hit_ranks)), np.array(hit_ranks) - 1] = 1
    topk[:, -1] = 1
    return topk


def test_a_suffixed_rl_row_and_its_stage_1_give_one_pair_against_the_default_row():
    # regression: "RPORec-forced" and "RPORec-forced stage 1" both named the pair (RPORec-forced, RPORec), and the
    # significance table printed it twice
    pairs = ablation_pairs(["RPORec", "RPORec stage 1", "RPORec-forced", "RPORec-forced stage 1"])
    assert pairs.count(("RPORec-forced", "RPORec")) == 1
    assert len(pairs) == len(set(pairs))


def test_significance_pairs_rows_over_their_shared_seeds(tmp_path, capsys):
    """RPORec rows against each baseline and the ablation pairs, an RL row's stage 1 among them; per-user values
    averaged over the seeds both rows ran."""
    (tmp_path / "rows").mkdir()
    users = np.arange(1, 201)
    ranks = {  # (model, seed): the rank each user's target got
        ("SASRec", 2020): np.tile([3, 6], 100), ("SASRec", 2021): np.tile([6, 3], 100),
        ("RPORec", 2020): np.tile([1, 2], 100), ("RPORec", 2021): np.tile([1, 2], 100),
        ("RPORec-no-reasoning", 2020): np.tile([2, 4], 100), ("RPORec-no-semantic", 2020): np.tile([2, 5], 100),
        # a family run with extra overrides (--suffix=-sampled)
        ("RPORec-no-reasoning-sampled", 2020): np.tile([1, 4], 100),
        ("RPORec-no-semantic-sampled", 2020): np.tile([1, 5], 100),
    }
    ndcg = {rank: 1 / np.log2(rank + 1) for rank in range(1, 7)}
    rows = []
    for (model, seed), hit_ranks in ranks.items():
        evaluations = {"test": {"user_id": users, "topk": _rec_topk(hit_ranks)}}
        if model == "RPORec":  # an RL row: its stage 1 ranked the targets 2 and 3
            evaluations = {"stage1": {"user_id": users, "topk": _rec_topk(np.tile([2, 3], 100))},
                           "stage2": evaluations["test"]}
        save_per_user(str(tmp_path / "rows" / f"{model}-{seed}.npz"), evaluations)
        mean_ndcg = float(np.mean(1 / np.log2(hit_ranks + 1)))
        rows.append({"model": model, "dataset": "d", "seed": seed, "ndcg@10": mean_ndcg, "command": "",
                     "per_user": f"{model}-{seed}.npz", **{m: 0.0 for m in
                     ["recall@10", "mrr@10", "hit@10", "recall@20", "ndcg@20", "mrr@20", "hit@20", "train_seconds",
                      "eval_seconds", "peak_memory_mb"]}})
    rows.append({**rows[0], "model": "GRU4Rec", "ndcg@10": 0.01})  # a weaker baseline without per-user results
    del rows[-1]["per_user"]
    tests = {(t["row"], t["against"]): t for t in significance(rows, summarize(rows), str(tmp_path))}
    with_results = significance(rows[:-1] + [{**rows[0], "model": "GRU4Rec", "ndcg@10": 0.01}], summarize(rows),
                                str(tmp_path))
    against = [t["against"] for t in with_results if t["row"] == "RPORec-no-reasoning"]
    assert against[:2] == ["SASRec", "GRU4Rec"]  # every baseline with per-user results, the best first
    assert list(tests) == [("RPORec", "SASRec"), ("RPORec stage 1", "SASRec"), ("RPORec-no-reasoning", "SASRec"),
                           ("RPORec-no-semantic", "SASRec"), ("RPORec-no-reasoning-sampled", "SASRec"),
                           ("RPORec-no-semantic-sampled", "SASRec"), ("RPORec", "RPORec stage 1"),
                           ("RPORec stage 1", "RPORec-no-reasoning"), ("RPORec-no-reasoning", "RPORec-no-semantic"),
                           # the same questions within the family, then each of its rows against its default row
                           ("RPORec-no-reasoning-sampled", "RPORec-no-semantic-sampled"),
                           ("RPORec-no-reasoning-sampled", "RPORec-no-reasoning"),
                           ("RPORec-no-semantic-sampled", "RPORec-no-semantic")]
    assert tests[("RPORec", "SASRec")]["seeds"] == [2020, 2021] and tests[("RPORec", "SASRec")]["users"] == 200
    assert tests[("RPORec", "SASRec")]["ndcg@10"] == pytest.approx((ndcg[1] + ndcg[2]) / 2)
    # SASRec's seeds swap which users get rank 3 and 6: averaged over seeds every user has the same value
    assert tests[("RPORec", "SASRec")]["against_ndcg@10"] == pytest.approx((ndcg[3] + ndcg[6]) / 2)
    assert tests[("RPORec", "SASRec")]["p_value"] < 1e-12
    no_reasoning = tests[("RPORec stage 1", "RPORec-no-reasoning")]  # only seed 2020 is shared
    assert no_reasoning["seeds"] == [2020] and no_reasoning["p_value"] < 1e-12
    assert no_reasoning["ndcg@10"] == pytest.approx((ndcg[2] + ndcg[3]) / 2)
    assert no_reasoning["against_ndcg@10"] == pytest.approx((ndcg[2] + ndcg[4]) / 2)
    prompt_text = tests[("RPORec-no-reasoning", "RPORec-no-semantic")]
    assert prompt_text["against_ndcg@10"] == pytest.approx((ndcg[2] + ndcg[5]) / 2)
    overrides = tests[("RPORec-no-semantic-sampled", "RPORec-no-semantic")]
    assert overrides["ndcg@10"] == pytest.approx((ndcg[1] + ndcg[5]) / 2)
    assert overrides["against_ndcg@10"] == pytest.approx((ndcg[2] + ndcg[5]) / 2)
    # a pair no rule makes (rows of different suffixes), asked for by name through benchmarks/write_table.py
    for row in rows:
        # write_table reruns no row but checks each one's command gives its key: any runnable pair will do
        runnable = row_spec("SASRec", "ml-100k", row["seed"], str(tmp_path))
        row = {**row, "command": runnable["command"], "key": runnable["key"]}
        (tmp_path / "rows" / f"{row['model']}-{row['seed']}.json").write_text(json.dumps(row))
    write_table.main([str(tmp_path), "--pair=RPORec-no-reasoning-sampled:RPORec-no-semantic"])
    asked = json.loads((tmp_path / "significance.json").read_text())[-1]
    assert (asked["row"], asked["against"], asked["seeds"]) == ("RPORec-no-reasoning-sampled", "RPORec-no-semantic",
                                                                [2020])
    assert asked["ndcg@10"] == pytest.approx((ndcg[1] + ndcg[4]) / 2)
    assert "| RPORec-no-reasoning-sampled | RPORec-no-semantic |" in (tmp_path / "results.md").read_text()
    # the folder keeps the pair: its next table, without --pair, still has it
    assert (tmp_path / "pairs.txt").read_text() == "RPORec-no-reasoning-sampled:RPORec-no-semantic\n"
    write_table.main([str(tmp_path), "--pair=RPORec-no-reasoning-sampled:RPORec-no-semantic"])
    assert (tmp_path / "pairs.txt").read_text() == "RPORec-no-reasoning-sampled:RPORec-no-semantic\n"
    (tmp_path / "significance.json").unlink()
    write_table.main([str(tmp_path)])
    assert json.loads((tmp_path / "significance.json").read_text())[-1] == asked
    with pytest.raises(SystemExit):
        write_table.main([str(tmp_path), "--pair=RPORec-no-reasoning-sampled:no-such-row"])
    assert "unknown: ['no-such-row']" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --pair and pairs.txt lines are read alike
        write_table.main([str(tmp_path), "--pair=RPORec-no-reasoning:RPORec-no-semantic:SASRec"])
    assert "is not ROW:AGAINST" in capsys.readouterr().err
    # a pair the rules make anyway is tested once; a line of pairs.txt that is not ROW:AGAINST is named
    write_table.main([str(tmp_path), "--pair= RPORec-no-reasoning : RPORec-no-semantic "])
    tested = [(t["row"], t["against"]) for t in json.loads((tmp_path / "significance.json").read_text())]
    assert tested.count(("RPORec-no-reasoning", "RPORec-no-semantic")) == 1 and len(set(tested)) == len(tested)
    with open(tmp_path / "pairs.txt", "a") as handle:
        handle.write("RPORec-no-reasoning\n")
    with pytest.raises(SystemExit):
        write_table.main([str(tmp_path)])
    assert "line 3: 'RPORec-no-reasoning' is not ROW:AGAINST" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing to write a table of
        write_table.main([str(tmp_path / "empty")])
    assert "no rows in" in capsys.readouterr().err


def test_a_rows_command_reproduces_its_key_until_a_default_it_ran_with_changes(tmp_path, monkeypatch, capsys):
    """``write_table`` pools rows by name, so a row that ran under an old default must not keep the default row's
    name: its command, rerun today, would not reproduce it. ``command_key`` finds those rows."""
    properties = tmp_path / "properties"
    shutil.copytree(config.PROPERTIES_DIR, properties)
    monkeypatch.setattr(config, "PROPERTIES_DIR", str(properties))
    monkeypatch.chdir(tmp_path)  # config files given relative to it, as the Beauty rows do
    (tmp_path / "a.yaml").write_text("epochs: 3\n")
    (tmp_path / "b.yaml").write_text("stopping_step: 4\n")
    specs = [row_spec("SASRec", "ml-100k", 2021, "out"),
             row_spec("RPORec-no-reasoning", "Beauty", 2020, "out", ["a.yaml", "b.yaml"],
                      {"text_embedder": "embedded:all-minilm-l6-v2", "topk": [10, 20]}, suffix="-minilm")]
    assert [command_key(spec["command"]) for spec in specs] == [spec["key"] for spec in specs]
    # the shell hands the runner one argument per setting, as RecBole's command-line parser needs
    arguments = shlex.split(specs[1]["command"])
    assert "--topk=[10, 20]" in arguments and arguments[-1] == "--config_files=a.yaml b.yaml"
    rows = [{"model": spec["label"], "seed": spec["seed"], "command": spec["command"], "key": spec["key"]}
            for spec in specs]
    assert [reproduces(row) for row in rows] == [True, True]
    (tmp_path / "b.yaml").write_text("stopping_step: 5\n")  # a config file the row named changed
    assert [reproduces(row) for row in rows] == [True, False]
    (tmp_path / "b.yaml").write_text("stopping_step: 4\n")
    plugin_defaults = properties / "RPORec.yaml"  # a default of the plugin changed: its rows only
    plugin_defaults.write_text(plugin_defaults.read_text().replace("collaborative_item_text: False",
                                                                   "collaborative_item_text: True"))
    assert plugin_defaults.read_text().count("collaborative_item_text: True") == 1
    assert [reproduces(row) for row in rows] == [True, False]
    (tmp_path / "rows").mkdir()
    for row in rows:
        (tmp_path / "rows" / f"{row['model']}.json").write_text(json.dumps(row))
    with pytest.raises(SystemExit):
        write_table.main([str(tmp_path)])
    error = capsys.readouterr().err
    assert "would not run them again" in error and "RPORec-no-reasoning-minilm seed 2020" in error
    assert "SASRec seed" not in error


def test_rows_of_one_name_must_have_run_with_the_same_settings(tmp_path, monkeypatch, capsys):
    """A comparison run with an extra override and no ``--suffix`` names its rows as the default ones: the folder's
    table would pool them (seeds apart is fine, settings apart is not)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(comparison, "run_rows", lambda *args: pytest.fail("a refused comparison ran rows"))
    (tmp_path / "rows").mkdir()
    specs = [row_spec("SASRec", "ml-100k", 2020, "."), row_spec("SASRec", "ml-100k", 2021, ".")]
    for spec in specs:
        row = {"model": spec["label"], "seed": spec["seed"], "command": spec["command"], "key": spec["key"]}
        (tmp_path / "rows" / f"{spec['seed']}.json").write_text(json.dumps(row))
    check_folder_rows(folder_rows("."))
    # an extra override without a suffix: refused before the row runs (regression: it ran and pooled with the others)
    with pytest.raises(SystemExit):
        main(["--models=SASRec", "--seeds=2022", "--hidden_dropout_prob=0.2", "--out=."])
    assert "--hidden_dropout_prob=0.2" in capsys.readouterr().err
    other = row_spec("SASRec", "ml-100k", 2022, ".", overrides={"hidden_dropout_prob": 0.2})
    (tmp_path / "rows" / "2022.json").write_text(json.dumps(
        {"model": other["label"], "seed": 2022, "command": other["command"], "key": other["key"]}))
    with pytest.raises(ValueError, match="rows of one name that ran with different settings"):
        check_folder_rows(folder_rows("."))
    with pytest.raises(SystemExit):  # the comparison refuses before running anything
        main(["--models=GRU4Rec", "--out=."])
    assert "--hidden_dropout_prob=0.2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--models=GRU4Rec", "--out=elsewhere", "--suffix=-a:b"])
    assert "--suffix cannot hold ':'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--models=GRU4Rec", "--out=elsewhere", "--config_files=missing.yaml"])
    assert "no config file 'missing.yaml'" in capsys.readouterr().err


def test_every_committed_row_reproduces_with_its_command(monkeypatch):
    """The record's rows must run again with the command they show; after a default changes, the rows that ran
    with the old one are renamed for it (``benchmarks/write_table.py`` says how)."""
    monkeypatch.chdir(REPOSITORY)  # the Beauty rows' config file is relative to the repository root
    rows = [json.loads(path.read_text()) for path in Path(REPOSITORY).glob("benchmarks/compare-*/rows/*.json")]
    assert len(rows) > 50
    assert [f"{row['dataset']} {row['model']} {row['seed']}" for row in rows if not reproduces(row)] == []
    for folder in Path(REPOSITORY).glob("benchmarks/compare-*"):
        check_folder_rows(folder_rows(str(folder)))  # and a name's seeds ran with one set of settings


def test_a_command_gives_its_values_as_recbole_reads_them():
    """The comparison's overrides and its rows' commands are read as RecBole reads its command line (Python literals,
    true/false, else text), so a row runs with what its command gives RecBole; yaml read ``1e-05`` and ``None`` as
    text, so such a row's command did not reproduce its key."""
    overrides = {"learning_rate": 1e-05, "weight_decay": None, "topk": [10, 20], "text_embedder": "embedded:x",
                 "rl": True, "dropout_prob": 0.5, "loss_type": "CE"}
    spec = row_spec("RPORec-no-reasoning", "ml-100k", 2020, "out", overrides=overrides)
    assert command_key(spec["command"]) == spec["key"]
    assert parse_overrides(["--a=false", "--b=TRUE", "--c=llm", "--d=2e-3", "--e=a=b", "x"]) == \
        ({"a": False, "b": True, "c": "llm", "d": 0.002}, ["--e=a=b", "x"])  # RecBole ignores a value holding "="


def test_a_command_that_cannot_be_read_does_not_reproduce_its_row():
    key = row_spec("SASRec", "ml-100k", 2020, "out")["key"]
    for command in ["python run_recbole_rporec.py --model=SASRec --dataset=ml-100k",  # no seed
                    "python run_recbole_rporec.py --model=SASRec --dataset=ml-100k --seed=2020 --topk=[10, 20]",
                    "python other.py --model=SASRec --dataset=ml-100k --seed=2020",
                    "python run_recbole_rporec.py --model=SASRec --dataset=ml-100k --seed=2020 '--unclosed"]:
        with pytest.raises(ValueError):
            command_key(command)
        assert not reproduces({"command": command, "key": key})
    assert reproduces({"command": "python run_recbole_rporec.py --model=SASRec --dataset=ml-100k --seed=2020",
                       "key": key})
    # a row from before rows kept their key cannot show it reproduces (regression: KeyError stopped the table)
    assert not reproduces({"command": "python run_recbole_rporec.py --model=SASRec --dataset=ml-100k --seed=2020"})


def test_a_table_without_paired_tests_says_so():
    """A baselines-only comparison (e.g. the first row of a new dataset) gets a sentence, not an empty table."""
    rows = [{"model": "GRU4Rec", "seed": 2020, "per_user": "g.npz"}]
    assert significance_table([], rows).startswith("No paired tests:")
    assert "| row | against |" not in significance_table([], rows)


def _run_result(device):
    """What ``run_recbole_rporec`` returns, with made-up metrics, for the tests of ``make_row``."""
    return {"test_result": {m: 0.1 for m in TABLE_METRICS}, "best_valid_result": {"ndcg@10": 0.2},
            "train_seconds": 1.0, "eval_seconds": 1.0, "epochs": 3, "best_epoch": 1, "device": device,
            "checkpoint": "c", "stage_results": {}}


def test_a_suffix_names_rows_run_with_extra_overrides_apart():
    """Rows with extra overrides (--loss_type=sampled_softmax --suffix=-sampled) get their own name, file and key, so
    the table never pools them with the default rows of the same model."""
    default = row_spec("RPORec-no-reasoning", "ml-100k", 2020, "out")
    sampled = row_spec("RPORec-no-reasoning", "ml-100k", 2020, "out", overrides={"loss_type": "sampled_softmax"},
                       suffix="-sampled")
    assert sampled["label"] == "RPORec-no-reasoning-sampled" and sampled["key"] != default["key"]
    assert os.path.basename(sampled["out_file"]) == f"RPORec-no-reasoning-sampled-seed2020-{sampled['key']}.json"
    assert "--model=RPORec " in sampled["command"] and "--loss_type=sampled_softmax" in sampled["command"]
    result = _run_result("cpu")
    assert make_row(sampled, result, 2.0)["model"] == "RPORec-no-reasoning-sampled"
    assert [s["model"] for s in summarize([make_row(default, result, 2.0), make_row(sampled, result, 2.0)])] == \
        ["RPORec-no-reasoning", "RPORec-no-reasoning-sampled"]


def test_a_row_records_the_time_of_its_valid_re_evaluation():
    """The valid evaluation after the test one (it keeps each valid user's result) is timed apart from eval_seconds;
    rows written before it was recorded have no such field, and a result without it writes none."""
    spec = row_spec("SASRec", "ml-100k", 2020, "out")
    assert make_row(spec, {**_run_result("cpu"), "per_user_valid_seconds": 12.34}, 2.0)["valid_eval_seconds"] == 12.3
    assert "valid_eval_seconds" not in make_row(spec, _run_result("cpu"), 2.0)


def test_a_summary_names_every_machine_its_seeds_ran_on():
    """Seeds of one row can run on different machines (AMD EPYC or Intel Xeon here): the summary's
    device lists each once, in the rows' order, so a mean train time is never silently one machine's."""
    spec = row_spec("SASRec", "ml-100k", 2020, "out")
    rows = [make_row({**spec, "seed": seed}, _run_result(device), 2.0)
            for seed, device in [(2020, "cpu (AMD EPYC, 2 cores)"), (2021, "cpu (Intel Xeon, 2 cores)"),
                                 (2022, "cpu (AMD EPYC, 2 cores)")]]
    assert summarize(rows)[0]["device"] == "cpu (AMD EPYC, 2 cores); cpu (Intel Xeon, 2 cores)"
    assert summarize(rows[:1] + rows[2:])[0]["device"] == "cpu (AMD EPYC, 2 cores)"


def test_a_row_killed_mid_training_resumes_from_its_own_last_epoch(tmp_path):
    """Each (row, seed, key) keeps its checkpoint in its own folder under the configured checkpoint_dir; a rerun
    resumes the newest run there that finished an epoch (``last/``), never another row's."""
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"checkpoint_dir": str(tmp_path / "ckpt")}))
    spec = row_spec("SASRec", "ml-100k", 2020, str(tmp_path / "out"), [str(config_file)])
    other = row_spec("SASRec", "ml-100k", 2021, str(tmp_path / "out"), [str(config_file)])
    settings = row_run_settings(spec)
    assert settings == {"checkpoint_dir": str(tmp_path / "ckpt" / "compare-runs" / f"SASRec-seed2020-{spec['key']}")}
    (tmp_path / "ckpt" / "compare-runs" / f"SASRec-seed2020-{spec['key']}" / "SASRec-a" / "last").mkdir(parents=True)
    (tmp_path / "ckpt" / "compare-runs" / f"SASRec-seed2020-{spec['key']}" / "SASRec-b").mkdir()  # no epoch done
    assert row_run_settings(spec)["resume"] == os.path.join(settings["checkpoint_dir"], "SASRec-a")
    assert "resume" not in row_run_settings(other)
    overridden = row_spec("SASRec", "ml-100k", 2020, str(tmp_path / "out"), [str(config_file)],
                          {"checkpoint_dir": str(tmp_path / "cli")})
    assert row_run_settings(overridden)["checkpoint_dir"].startswith(str(tmp_path / "cli" / "compare-runs"))


def test_chart_labels_of_many_long_row_names_do_not_overlap():
    # regression: vertical bars with 11+ rows printed their rotated names on top of each other
    names = ["SASRec", "GRU4Rec"] + [f"RPORec-no-{part}-sampled" for part in
                                     ("reasoning", "semantic", "collaborative")] + [f"RPORec-row-{i}" for i in range(10)]
    summary = [{"model": n, "seeds": [2020], "ndcg@10": 0.05, "ndcg@10_std": 0.0, "recall@10": 0.1,
                "recall@10_std": 0.0} for n in names]
    fig = chart_figure(summary)
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in fig.axes[0].get_yticklabels()]
    assert [label.get_text() for label in fig.axes[0].get_yticklabels()] == names
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(box.x0 >= 0 for box in boxes)  # none cut off at the figure's left edge


def test_table_and_csv_show_epochs_where_rows_kept_them(tmp_path):
    """Rows written before rows kept their epoch count show '?' in the table and an empty CSV cell; the CSV's
    columns are every row's (regression: they were the first row's, so a column the first row lacked was dropped)."""
    metrics = {m: 0.05 for m in TABLE_METRICS}
    common = {"dataset": "ml-mini", "train_seconds": 10.0, "eval_seconds": 1.0, "peak_memory_mb": 500.0,
              "device": "cpu", "command": "python run_recbole_rporec.py --model=SASRec", **metrics}
    rows = [{"model": "SASRec", "seed": 2020, **common},
            {"model": "SASRec", "seed": 2021, **common, "epochs": 48, "best_epoch": 37, "stage_results": {"a": {}}}]
    write_outputs(rows, str(tmp_path))
    assert "| SASRec | 2020,2021 | ?,48 | ? | 0.0500 ± 0.0000 |" in (tmp_path / "results.md").read_text()
    with open(tmp_path / "results.csv") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [(r["epochs"], r["best_epoch"]) for r in csv_rows] == [("", ""), ("48", "37")]
    assert "stage_results" not in csv_rows[1]  # nested results are the json's


def _seeded_rows(model, valid_and_test):
    return [{"model": model, "seed": 2020 + i, "dataset": "d", "train_seconds": 1.0, "eval_seconds": 1.0,
             "peak_memory_mb": 1.0, "device": "cpu", "command": f"python run_recbole_rporec.py --model={model}",
             **{m: test for m in TABLE_METRICS}, "valid_ndcg@10": valid} for i, (valid, test) in enumerate(valid_and_test)]


def test_the_headline_row_is_selected_on_valid_among_rows_with_three_seeds():
    """The headline is the RPORec row with 3+ seeds and the best mean valid NDCG@10, whatever its test; a row with a
    better valid but fewer seeds, or a better test, is not it. Its ratio is against the best baseline by test."""
    rows = (_seeded_rows("SASRec", [(0.06, 0.040)] * 2)
            + _seeded_rows("RPORec-a", [(0.070, 0.050), (0.072, 0.052), (0.071, 0.048)])      # best test
            + _seeded_rows("RPORec-b", [(0.074, 0.044), (0.075, 0.046), (0.076, 0.045)])      # best valid, 3 seeds
            + _seeded_rows("RPORec-c", [(0.090, 0.030), (0.090, 0.030)]))                      # 2 seeds only
    summary = summarize(rows)
    assert selected_on_valid(summary)["model"] == "RPORec-b"
    assert summary[1]["valid_ndcg@10"] == pytest.approx(0.071) and summary[1]["valid_ndcg@10_std"] == pytest.approx(0.001)
    assert headline(summary) == ("Headline (the RPORec row with 3+ seeds and the highest valid NDCG@10): RPORec-b, "
                                 "valid 0.0750, test 0.0450, 1.12x SASRec (1.12x on the seeds both ran: 2020,2021).")
    table = markdown_table(summary)
    assert "| RPORec-b | 2020,2021,2022 | ?,?,? | 0.0750 ± 0.0010 | 0.0450 ± 0.0010 |" in table
    assert headline(summary) in table
    assert headline(summarize(rows[:2] + rows[-2:])) == "Headline: no RPORec row has 3+ seeds yet."


def test_ratios_between_rows_of_different_seeds_are_also_given_on_the_seeds_both_ran():
    """Regression: a 3-seed RPORec mean against a 2-seed baseline's mixed the third seed's luck into the ratio (ml-100k,
    session 47: 0.96x, 0.99x on the shared seeds); the table and headline now add the ratio on the shared seeds."""
    rows = (_seeded_rows("SASRec", [(0.06, 0.050), (0.06, 0.040)])
            + _seeded_rows("RPORec-a", [(0.07, 0.055), (0.07, 0.045), (0.07, 0.020)])
            + _seeded_rows("RPORec-b", [(0.05, 0.060)]))
    summary = summarize(rows)
    base = best_baseline(summary)
    ratio, seeds = ratio_on_shared_seeds(summary[1], base)
    assert (ratio, seeds) == (pytest.approx(0.050 / 0.045), [2020, 2021])
    assert summary[1]["ndcg@10"] / base["ndcg@10"] == pytest.approx(0.040 / 0.045)  # the plain ratio of means
    assert headline(summary).endswith("test 0.0400, 0.89x SASRec (1.11x on the seeds both ran: 2020,2021).")
    assert ("RPORec-a: 0.89x (1.11x on the seeds both ran: 2020,2021); RPORec-b: 1.33x (1.20x on the seed both ran: "
            "2020)") in markdown_table(summary)
    same_seeds = summarize(_seeded_rows("SASRec", [(0.06, 0.050)] * 3) + _seeded_rows("RPORec-a", [(0.07, 0.055)] * 3))
    assert ratio_on_shared_seeds(same_seeds[1], same_seeds[0]) is None
    assert headline(same_seeds).endswith("1.10x SASRec.")
    other_seeds = [dict(row, seed=row["seed"] + 10) for row in _seeded_rows("RPORec-c", [(0.07, 0.055)] * 3)]
    assert ratio_on_shared_seeds(summarize(other_seeds)[0], same_seeds[0]) is None


def test_the_headline_is_selected_by_valid_before_the_text_shares_were_fitted_to_it():
    """Regression: a row whose band shares were chosen on valid (``band_shares``) reports the valid after the search,
    which is optimistic (on ml-100k +0.005-0.008 on valid, nothing on test); the headline compares the valid before."""
    searched = _seeded_rows("RPORec-searched", [(0.080, 0.040)] * 3)
    for row in searched:
        row["band_shares"] = {"learned": [0.1], "chosen": [0.2], "valid ndcg@10": [0.070, 0.080]}
    summary = summarize(_seeded_rows("SASRec", [(0.06, 0.040)]) + searched
                        + _seeded_rows("RPORec-plain", [(0.075, 0.044)] * 3))
    assert selected_on_valid(summary)["model"] == "RPORec-plain"
    searched[0]["band_shares"]["valid ndcg@10"][0] = 0.091  # mean before the search 0.077: now the best
    summary = summarize(_seeded_rows("SASRec", [(0.06, 0.040)]) + searched)
    assert headline(summary) == ("Headline (the RPORec row with 3+ seeds and the highest valid NDCG@10): "
                                 "RPORec-searched, valid 0.0770 before the text shares were chosen on it (0.0800 "
                                 "after), test 0.0400, 1.00x SASRec (1.00x on the seed both ran: 2020).")


def test_selection_reads_ndcg_before_the_search_when_the_search_chose_on_another_metric():
    """Regression: with ``valid_metric: MRR@10`` the search stores its MRR pair; selection fell back to the NDCG@10
    measured after the search. It now reads stage 1's whole valid result."""
    searched = _seeded_rows("RPORec-searched", [(0.080, 0.040)] * 3)
    for row in searched:
        row["band_shares"] = {"learned": [0.1], "chosen": [0.2], "valid mrr@10": [0.030, 0.034],
                              "valid before": {"mrr@10": 0.030, "ndcg@10": 0.070}}
    summary = summarize(_seeded_rows("SASRec", [(0.06, 0.040)]) + searched
                        + _seeded_rows("RPORec-plain", [(0.075, 0.044)] * 3))
    assert [s[SELECTION_VALID] for s in summary if s["model"] == "RPORec-searched"] == [pytest.approx(0.070)]
    assert selected_on_valid(summary)["model"] == "RPORec-plain"
