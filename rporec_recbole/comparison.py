"""Side-by-side comparison: several models (and RPORec ablations) on one dataset, one split, one metric set.

Each (row, seed) runs in its own process through ``run_recbole_rporec``, so rows cannot leak state into each
other and each reports its own peak memory. Finished rows are cached as json under ``<out>/rows/``, keyed by
model, dataset, seed and the values of the row's settings (the plugin's yamls for it, config files, overrides).
A changed default or config file makes the rows it applies to stale: a comparison stops before running anything
until they are renamed (their values kept) or removed, since they would pool with new rows under one name. An
interrupted comparison resumes where it stopped, inside a row too: each row keeps its checkpoint under
``<checkpoint_dir>/compare-runs/<row>-seed<seed>-<key>/`` and goes on from its last finished epoch. The folder's
table, CSV, JSON, PNG and paired tests hold every row in it, whichever commands ran them (one folder per dataset
and split), with the extra pairs its pairs.txt names.

    python -m rporec_recbole.comparison --dataset=ml-100k --models=SASRec,GRU4Rec,RPORec-stage1,RPORec
"""
import argparse
import ast
import csv
import glob
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

import yaml

from rporec_recbole.checkpoint import atomic_write_bytes, atomic_write_json
from rporec_recbole.config import plugin_yamls
from rporec_recbole.per_user import load_per_user, paired_test, per_user_ndcg, save_per_user
from rporec_recbole.timing import process_peak_rss_mb

# Named RPORec rows: the ablations are config overrides, so every row is one rerunnable command.
VARIANTS = {
    "RPORec": ("RPORec", {}),
    "RPORec-stage1": ("RPORec", {"rl": False}),
    "RPORec-no-reasoning": ("RPORec", {"rl": False, "use_reasoning": False}),
    "RPORec-no-collaborative": ("RPORec", {"rl": False, "use_collaborative": False}),
    "RPORec-no-semantic": ("RPORec", {"rl": False, "use_semantic": False}),
}
# Settings added after cached rows existed, each with the value that behaves as the code did before it: at that value
# a setting stays out of the row's key, so adding an option (off by default) keeps every cached row. A later change
# of its default puts the new value in the key, and the rows it applies to become stale (see check_folder_rows).
# Add each new setting here.
SETTINGS_ADDED_LATER = {"force_answer": False, "answer_max_new_tokens": 32, "text_embedder": "llm",
                        "constrain_answer": False, "answer_fusion": "replace", "collaborative_item_text": False,
                        "contrastive_weight": 0.0, "contrastive_temperature": 1.0, "learned_item_text_tokens": False,
                        "collaborative_initializer_range": None, "collaborative_item_text_in_scoring": True,
                        "item_text_share_on_valid": False, "collaborative_item_text_fusion": "sum",
                        "reasoning_seed": None}
# Settings that change how a row runs (its memory), never what it measures: they stay out of the key.
SETTINGS_WITHOUT_EFFECT_ON_RESULTS = {"rl_trim_heap_mb"}
# Settings read only while another one (their switch) is on: with the switch off they cannot change a result, so they
# stay out of the key.
SETTINGS_READ_ONLY_WHEN_ON = {"contrastive_temperature": "contrastive_weight",
                              "collaborative_item_text_in_scoring": "collaborative_item_text",
                              "collaborative_item_text_fusion": "collaborative_item_text"}
PAIRS_FILE = "pairs.txt"
# Where a row keeps its users' top-k hits, per split: the field of the row's json that names the file, and the
# file's ending beside the json (valid since session 40)
PER_USER_FILES = {"test": ("per_user", ".users.npz"), "valid": ("per_user_valid", ".valid-users.npz")}
TABLE_METRICS = ["recall@10", "ndcg@10", "mrr@10", "hit@10", "recall@20", "ndcg@20", "mrr@20", "hit@20"]
VALID_METRIC = "valid_ndcg@10"  # what selects among RPORec rows: the test split never does
SELECTION_VALID = "selection_valid_ndcg@10"  # the same, before any choice made on valid after training
HEADLINE_SEEDS = 3  # a headline row has at least this many seeds


def resolve_row(name):
    """``(model, overrides)`` of a row name: a named variant or any model name."""
    return VARIANTS.get(name, (name, {}))


def row_settings(name, dataset, config_files, overrides):
    """The settings a row runs with beyond RecBole's own defaults, merged in RecBole's precedence: the plugin's
    yamls for the row, then config files, then command-line overrides (the variant's last)."""
    model, variant_overrides = resolve_row(name)
    settings = {}
    for path in plugin_yamls(model, dataset) + list(config_files or []):
        with open(path) as handle:
            settings.update(yaml.safe_load(handle) or {})
    return {**settings, **overrides, **variant_overrides}


def row_key(name, dataset, seed, config_files, overrides):
    """Cache key of a row: its model, dataset, seed and settings' values. Values, not the yamls' text: a comment
    edit keeps the cached rows, and after a default changes, a row that states the old value is the row that ran
    with it. Settings in ``SETTINGS_ADDED_LATER`` at their original value, ``SETTINGS_WITHOUT_EFFECT_ON_RESULTS``, and
    ``SETTINGS_READ_ONLY_WHEN_ON`` with their switch off are left out."""
    model, _ = resolve_row(name)
    merged = row_settings(name, dataset, config_files, overrides)
    settings = {key: value for key, value in merged.items()
                if not (key in SETTINGS_ADDED_LATER and value == SETTINGS_ADDED_LATER[key])
                and key not in SETTINGS_WITHOUT_EFFECT_ON_RESULTS
                and not (key in SETTINGS_READ_ONLY_WHEN_ON and not merged.get(SETTINGS_READ_ONLY_WHEN_ON[key]))}
    blob = json.dumps([model, dataset, seed, settings], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def row_command(name, dataset, seed, config_files, overrides):
    """The command line that reproduces one row by itself (quoted for a POSIX shell: values such as ``[10, 20]`` and
    several config files hold spaces)."""
    model, variant_overrides = resolve_row(name)
    args = [f"--model={model}", f"--dataset={dataset}", f"--seed={seed}"]
    args += [f"--{k}={v}" for k, v in {**overrides, **variant_overrides}.items()]
    if config_files:
        args.append(f"--config_files={' '.join(config_files)}")
    return "python run_recbole_rporec.py " + " ".join(shlex.quote(arg) for arg in args)


def parse_command(command):
    """``(model, dataset, seed, config_files, overrides)`` of a row's ``command`` (as ``row_command`` writes it);
    ValueError when the command cannot be read as one."""
    arguments = shlex.split(command)
    overrides, unreadable = parse_overrides(arguments[2:])
    if arguments[:2] != ["python", "run_recbole_rporec.py"] or unreadable \
            or not {"model", "dataset", "seed"} <= overrides.keys():
        raise ValueError(f"not a row's command: {command!r}")
    model, dataset, seed = str(overrides.pop("model")), str(overrides.pop("dataset")), overrides.pop("seed")
    config_files = str(overrides.pop("config_files")).split() if "config_files" in overrides else None
    return model, dataset, seed, config_files, overrides


def command_key(command):
    """The cache key a row's ``command`` gives under today's settings: the row's own key while every setting it ran
    with keeps its value, another once a plugin default or a config file it names has changed."""
    return row_key(*parse_command(command))


def settings_key(command):
    """``command_key`` without the seed: the same for every seed of a row run with the same settings."""
    model, dataset, _, config_files, overrides = parse_command(command)
    return row_key(model, dataset, None, config_files, overrides)


def reproduces(row):
    """Whether the row's command, run today, would run the row again (see ``command_key``). A row written before rows
    kept their command and key cannot show it does."""
    if "command" not in row or "key" not in row:
        return False
    try:
        return command_key(row["command"]) == row["key"]
    except ValueError:
        return False


def row_run_settings(spec):
    """Where the row's run keeps its checkpoint (one folder per row, seed and key, under its configured
    ``checkpoint_dir``) and, when an earlier run of the row was killed after a finished epoch, ``resume`` from it:
    a long row loses at most one epoch."""
    configured = row_settings(spec["name"], spec["dataset"], spec["config_files"], spec["overrides"])
    folder = os.path.join(configured.get("checkpoint_dir", "saved"), "compare-runs",
                          os.path.basename(spec["out_file"])[:-len(".json")])
    settings = {"checkpoint_dir": folder}
    started = [os.path.dirname(last) for last in glob.glob(os.path.join(folder, "*", "last"))]
    if started:
        settings["resume"] = max(started, key=os.path.getmtime)
    return settings


def _run_one(spec):
    """Child process: run one row and write its result json (peak RSS measured here, in this process only)."""
    from rporec_recbole.quick_start import run_recbole_rporec

    model, variant_overrides = resolve_row(spec["name"])
    config_dict = {**spec["overrides"], **variant_overrides, "seed": spec["seed"], **row_run_settings(spec)}
    if "resume" in config_dict:
        print(f"[compare] resuming {spec['label']} seed {spec['seed']} from {config_dict['resume']}", flush=True)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv: the spec is the whole config
    start = time.time()
    result = run_recbole_rporec(model=model, dataset=spec["dataset"], config_file_list=spec["config_files"] or None,
                                config_dict=config_dict)
    write_row(spec, result, time.time() - start)


def row_spec(name, dataset, seed, out_dir, config_files=None, overrides=None, suffix=""):
    """Everything that identifies one (row, seed): its cache key, result file and reproducing command. The row is
    shown as ``name + suffix``, so rows run with extra overrides do not pool with the default ones."""
    overrides = overrides or {}
    key = row_key(name, dataset, seed, config_files, overrides)
    label = name + suffix
    return {"name": name, "label": label, "dataset": dataset, "seed": seed, "config_files": config_files,
            "overrides": overrides, "key": key,
            "out_file": os.path.join(out_dir, "rows", f"{label}-seed{seed}-{key}.json"),
            "command": row_command(name, dataset, seed, config_files, overrides)}


def make_row(spec, result, total_seconds):
    """One row of the comparison from ``run_recbole_rporec``'s result. Peak memory and ``total_seconds`` are this
    process's: a row resumed from a checkpoint counts its earlier processes in ``train_seconds`` only."""
    row = {
        "model": spec["label"], "dataset": spec["dataset"], "seed": spec["seed"],
        **{k: float(v) for k, v in result["test_result"].items()},
        "valid_ndcg@10": float(result["best_valid_result"].get("ndcg@10", float("nan"))),
        "train_seconds": round(result["train_seconds"], 1), "eval_seconds": round(result["eval_seconds"], 1),
        "epochs": result["epochs"], "best_epoch": result["best_epoch"],
        "total_seconds": round(total_seconds, 1),
        "peak_memory_mb": round(process_peak_rss_mb(), 1),
        "device": result["device"], "command": spec["command"], "key": spec["key"],
        "checkpoint": result["checkpoint"],  # where this machine keeps the row's weights
    }
    if result.get("per_user_valid_seconds") is not None:  # the valid re-evaluation that keeps per-user results
        row["valid_eval_seconds"] = round(result["per_user_valid_seconds"], 1)
    if result.get("band_shares"):
        row["band_shares"] = result["band_shares"]
    if result["stage_results"]:  # RPORec with RL: stage 1 (initial policy) next to stage 2, for the ablation table
        row["stage_results"] = {stage: {split: {k: float(v) for k, v in metrics.items()}
                                        for split, metrics in splits.items() if metrics}
                                for stage, splits in result["stage_results"].items()}
    return row


def write_row(spec, result, total_seconds):
    """The row's json and, next to it, its test users' top-k hits (for the paired tests) and its valid users' (for
    analyses that choose on valid); the json goes last, as its presence marks the row done."""
    row = make_row(spec, result, total_seconds)
    for split in PER_USER_FILES:
        if result.get(f"per_user_{split}"):
            save_row_per_user(row, spec["out_file"], split, result[f"per_user_{split}"])
    atomic_write_json(spec["out_file"], row)


def save_row_per_user(row, row_file, split, evaluations):
    """Write ``evaluations`` (``{name: evaluation}`` of ``split``) beside the row's json and name the file in
    ``row``."""
    field, ending = PER_USER_FILES[split]
    per_user_file = row_file[:-len(".json")] + ending
    save_per_user(per_user_file, evaluations)
    row[field] = os.path.basename(per_user_file)


def run_rows(names, dataset, seeds, out_dir, config_files=None, overrides=None, cached_only=False, suffix=""):
    """Run (or reuse) every row and seed; returns the list of row dicts. ``cached_only`` reuses finished rows and
    skips the others instead of running them (to write the table of what ran without starting a run)."""
    os.makedirs(os.path.join(out_dir, "rows"), exist_ok=True)
    rows = []
    for name in names:
        for seed in seeds:
            spec = row_spec(name, dataset, seed, out_dir, config_files, overrides, suffix)
            if not os.path.isfile(spec["out_file"]) and cached_only:
                print(f"[compare] not run, skipped: {spec['label']} seed {seed}", flush=True)
                continue
            if not os.path.isfile(spec["out_file"]):
                print(f"[compare] running {spec['label']} seed {seed}: {spec['command']}", flush=True)
                subprocess.run([sys.executable, "-m", "rporec_recbole.comparison", "--one", json.dumps(spec)],
                               check=True)
            else:
                print(f"[compare] reusing {spec['out_file']}", flush=True)
            with open(spec["out_file"]) as handle:
                rows.append(json.load(handle))
    return rows


def valid_for_selection(row):
    """The valid NDCG@10 that selects ``row``: its trained model's, before ``item_text_share_on_valid`` fitted the
    text shares to valid (after which valid is optimistic: on ml-100k the search gained 0.005-0.008 on valid and
    nothing on test, comparison record, session 36)."""
    search = row.get("band_shares") or {}
    if "valid before" in search:
        return search["valid before"].get("ndcg@10")
    searched_ndcg = search.get("valid ndcg@10")  # rows written before session 37 keep only the searched metric
    return searched_ndcg[0] if searched_ndcg else row.get(VALID_METRIC)


def summarize(rows):
    """One summary per model: mean and sample std over seeds of every numeric column, and every device its seeds ran
    on (rows before the CPU model was recorded say only 'cpu (2 cores)')."""
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(dict(row, **{SELECTION_VALID: valid_for_selection(row)}))
    summary = []
    for model, group in by_model.items():
        entry = {"model": model, "dataset": group[0]["dataset"], "seeds": [r["seed"] for r in group],
                 "device": "; ".join(dict.fromkeys(r.get("device", "unknown") for r in group)),
                 "command": group[0]["command"],
                 # per seed; None for rows written before rows kept their epoch count
                 "epochs": [r.get("epochs") for r in group],
                 "ndcg@10_by_seed": {r["seed"]: r["ndcg@10"] for r in group}}
        for column in TABLE_METRICS + [VALID_METRIC, SELECTION_VALID, "train_seconds", "eval_seconds",
                                       "peak_memory_mb"]:
            values = [r[column] for r in group if r.get(column) is not None]
            entry[column] = statistics.fmean(values) if values else None  # None where no seed kept the column
            entry[column + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def baselines_best_first(summary):
    """The summary rows that are not RPORec, by test NDCG@10, highest first (ties keep their order)."""
    return sorted((s for s in summary if not s["model"].startswith("RPORec")), key=lambda s: -s["ndcg@10"])


def best_baseline(summary):
    return next(iter(baselines_best_first(summary)), None)


def ratio_on_shared_seeds(row, base):
    """``row``'s test NDCG@10 over ``base``'s, each averaged over only the seeds both ran, and those seeds; None where
    the two ran the same seeds (the ratio of their means is then the fair one) or share no seed or base scored 0."""
    row_seeds, base_seeds = row["ndcg@10_by_seed"].keys(), base["ndcg@10_by_seed"].keys()
    shared = sorted(row_seeds & base_seeds)
    if not shared or row_seeds == base_seeds:
        return None
    row_mean, base_mean = (statistics.fmean(s["ndcg@10_by_seed"][seed] for seed in shared) for s in (row, base))
    return (row_mean / base_mean, shared) if base_mean > 0 else None


def shared_seeds_note(row, base):
    """Where the rows' seeds differ, ' (0.99x on the seeds both ran: 2020,2021)', else '': a mean over 3 seeds against
    one over 2 mixes the seeds' spread into the ratio (ml-100k, session 47: 0.96x, 0.99x on the shared seeds)."""
    shared = ratio_on_shared_seeds(row, base)
    if shared is None:
        return ""
    ratio, seeds = shared
    return f" ({ratio:.2f}x on the seed{'s' * (len(seeds) > 1)} both ran: {','.join(map(str, seeds))})"


def selected_on_valid(summary, min_seeds=HEADLINE_SEEDS):
    """The RPORec row with the highest mean valid NDCG@10 (``valid_for_selection``) among those with at least
    ``min_seeds`` seeds, else None: the headline row, chosen without looking at test."""
    candidates = [s for s in summary if s["model"].startswith("RPORec") and len(s["seeds"]) >= min_seeds
                  and s[SELECTION_VALID] is not None]
    return max(candidates, key=lambda s: s[SELECTION_VALID], default=None)


def headline(summary):
    """One sentence: the valid-selected RPORec row's test NDCG@10 against the best baseline by test (the strictest
    baseline to beat)."""
    base, row = best_baseline(summary), selected_on_valid(summary)
    if row is None:
        return f"Headline: no RPORec row has {HEADLINE_SEEDS}+ seeds yet."
    text = (f"Headline (the RPORec row with {HEADLINE_SEEDS}+ seeds and the highest valid NDCG@10): {row['model']}, "
            f"valid {row[SELECTION_VALID]:.4f}")
    if row[SELECTION_VALID] != row[VALID_METRIC]:
        text += f" before the text shares were chosen on it ({row[VALID_METRIC]:.4f} after)"
    text += f", test {row['ndcg@10']:.4f}"
    if base and base["ndcg@10"] > 0:
        text += f", {row['ndcg@10'] / base['ndcg@10']:.2f}x {base['model']}{shared_seeds_note(row, base)}"
    return text + "."


def markdown_table(summary):
    # a spread only where a row has several seeds (one seed has none, not a spread of 0)
    fmt = lambda s, c: f"{s[c]:.4f} ± {s[c + '_std']:.4f}" if len(s["seeds"]) > 1 else f"{s[c]:.4f}"
    header = ["model", "seeds", "epochs", "valid ndcg@10"] + TABLE_METRICS + ["train s", "eval s", "peak MB", "device"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        epochs = ",".join("?" if e is None else str(e) for e in s["epochs"])
        valid = "?" if s[VALID_METRIC] is None else fmt(s, VALID_METRIC)
        cells = [s["model"], ",".join(map(str, s["seeds"])), epochs, valid] + [fmt(s, c) for c in TABLE_METRICS]
        cells += [f"{s['train_seconds']:.0f}", f"{s['eval_seconds']:.0f}", f"{s['peak_memory_mb']:.0f}", s["device"]]
        lines.append("| " + " | ".join(cells) + " |")
    base = best_baseline(summary)
    if base:
        lines.append("")
        lines.append(f"Best baseline by test NDCG@10: {base['model']} ({base['ndcg@10']:.4f}). "
                     + "; ".join(f"{s['model']}: {s['ndcg@10'] / base['ndcg@10']:.2f}x{shared_seeds_note(s, base)}"
                                 for s in summary if s["model"].startswith("RPORec") and base["ndcg@10"] > 0))
    lines += ["", headline(summary)]
    return "\n".join(lines) + "\n"


# Paired questions of the record, (row, against); "<row> stage 1" is the stage-1 test evaluation of an RL row.
ABLATION_PAIRS = [
    ("RPORec", "RPORec stage 1"),                  # does RL help?
    ("RPORec-stage1", "RPORec-no-reasoning"),      # does reasoning help?
    ("RPORec stage 1", "RPORec-no-reasoning"),
    ("RPORec-stage1", "RPORec-no-collaborative"),  # does each branch help?
    ("RPORec-stage1", "RPORec-no-semantic"),
    ("RPORec-no-reasoning", "RPORec-no-semantic"),  # does the prompt text help the collaborative branch?
]


def _variant_and_suffix(name):
    """``(variant, suffix)`` of a row name that extends a named RPORec variant (the longest that matches), else
    None: "RPORec-stage1-sampled" -> ("RPORec-stage1", "-sampled")."""
    matches = [v for v in VARIANTS if name == v or name.startswith(v + "-")]
    if not matches:
        return None
    variant = max(matches, key=len)
    return variant, name[len(variant):]


def _with_suffix(name, suffix):
    """``name + suffix``, the suffix before " stage 1" in an RL row's stage-1 name."""
    stage1 = " stage 1"
    return name[:-len(stage1)] + suffix + stage1 if name.endswith(stage1) else name + suffix


def ablation_pairs(names):
    """``ABLATION_PAIRS`` within each family of rows that share a suffix (rows run with the same extra overrides),
    then each suffixed row against its default row (do the overrides help?)."""
    parsed = [_variant_and_suffix(name.removesuffix(" stage 1")) for name in names]
    suffixes = sorted({found[1] for found in parsed if found})
    pairs = [(_with_suffix(row, suffix), _with_suffix(against, suffix))
             for suffix in suffixes for row, against in ABLATION_PAIRS]
    suffixed = sorted({found for found in parsed if found and found[1]})  # an RL row and its stage 1: one pair
    pairs += [(variant + suffix, variant) for variant, suffix in suffixed]
    return pairs


def per_user_results(rows, out_dir, k=10, split="test"):
    """{row name: {seed: {user: NDCG@k}}} on ``split`` (test or valid) of the rows that kept per-user results for
    it (an RL row adds its stage 1). Rows run before session 40 kept test only."""
    field, _ = PER_USER_FILES[split]
    results = {}
    for row in rows:
        if field not in row:
            continue
        evaluations = load_per_user(os.path.join(out_dir, "rows", row[field]))
        reported = evaluations["stage2"] if "stage2" in evaluations else evaluations[split]
        results.setdefault(row["model"], {})[row["seed"]] = per_user_ndcg(reported, k)
        if "stage1" in evaluations:
            results.setdefault(f"{row['model']} stage 1", {})[row["seed"]] = per_user_ndcg(evaluations["stage1"], k)
    return results


def _mean_over_seeds(by_seed, seeds):
    users = set.intersection(*(set(by_seed[seed]) for seed in seeds))
    return {user: statistics.fmean(by_seed[seed][user] for seed in seeds) for user in users}


def paired_values(results, row, against):
    """``(seeds, row's {user: value}, against's {user: value})`` from ``per_user_results``: the seeds both rows ran
    and each user's value averaged over them, so a paired test pairs the same users and seeds (no seeds: Nones)."""
    seeds = sorted(results.get(row, {}).keys() & results.get(against, {}).keys())
    if not seeds:
        return seeds, None, None
    return seeds, _mean_over_seeds(results[row], seeds), _mean_over_seeds(results[against], seeds)


def significance(rows, summary, out_dir, k=10, extra_pairs=()):
    """Paired t-tests on per-user NDCG@k: each RPORec row against each baseline (the best first: which one is best
    can hang on a seed), then ``ablation_pairs``, then ``extra_pairs`` ((row, against) named by the caller, e.g. two
    rows of different suffixes). A user's value is averaged over the seeds both rows ran, so each test pairs the
    same users and seeds."""
    results = per_user_results(rows, out_dir, k)
    pairs = [(name, base["model"]) for base in baselines_best_first(summary) for name in results
             if name.startswith("RPORec")]
    tests = []
    # a pair asked for twice (an extra pair that is also automatic) is tested once
    for row, against in dict.fromkeys(pairs + ablation_pairs(results) + [tuple(pair) for pair in extra_pairs]):
        seeds, values_row, values_against = paired_values(results, row, against)
        if not seeds:
            continue
        users, mean_row, mean_against, p_value = paired_test(values_row, values_against)
        tests.append({"row": row, "against": against, "seeds": seeds, "users": users, f"ndcg@{k}": mean_row,
                      f"against_ndcg@{k}": mean_against, "p_value": p_value})
    return tests


def significance_table(tests, rows, k=10):
    if not tests:
        return "No paired tests: they need an RPORec row and a row to compare it with, both with per-user results.\n"
    lines = [f"Paired t-tests on per-user test NDCG@{k} (each user's value averaged over the seeds both rows ran):",
             "", f"| row | against | seeds | users | NDCG@{k} | against | ratio | p |",
             "|---|---|---|---|---|---|---|---|"]
    for t in tests:
        ratio = t[f"ndcg@{k}"] / t[f"against_ndcg@{k}"] if t[f"against_ndcg@{k}"] > 0 else float("nan")
        lines.append(f"| {t['row']} | {t['against']} | {','.join(map(str, t['seeds']))} | {t['users']} | "
                     f"{t[f'ndcg@{k}']:.4f} | {t[f'against_ndcg@{k}']:.4f} | {ratio:.2f}x | {t['p_value']:.3g} |")
    missing = sorted({f"{r['model']} (seed {r['seed']})" for r in rows if "per_user" not in r})
    if missing:
        lines += ["", "No per-user results kept (rows run before they were): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def chart_figure(summary):
    """Horizontal bars of test NDCG@10 and Recall@10 (one row per model, so long row names never overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["model"] for s in summary]
    base = best_baseline(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.32 * len(names)), sharey=True)
    positions = range(len(names))
    colors = ["tab:orange" if n.startswith("RPORec") else "tab:blue" for n in names]
    for ax, metric in zip(axes, ["ndcg@10", "recall@10"]):
        ax.barh(positions, [s[metric] for s in summary], xerr=[s[metric + "_std"] for s in summary], color=colors)
        title = f"test {metric.upper()}"
        if base:
            ax.axvline(base[metric], color="gray", linestyle="--")
            title += f"\n(dashed: best baseline, {base['model']} {base[metric]:.4f})"
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    axes[0].set_yticks(list(positions), names)
    axes[0].invert_yaxis()  # the table's first row on top
    fig.tight_layout()
    return fig


def bar_chart(summary, path):
    import matplotlib.pyplot as plt

    fig = chart_figure(summary)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows, out_dir, extra_pairs=()):
    """results.md / .csv / .json (one object per run), results.png and significance.json; returns the markdown."""
    summary = summarize(rows)
    tests = significance(rows, summary, out_dir, extra_pairs=extra_pairs)
    markdown = markdown_table(summary) + "\n" + significance_table(tests, rows)
    atomic_write_bytes(os.path.join(out_dir, "results.md"), markdown.encode())
    atomic_write_json(os.path.join(out_dir, "results.json"), rows)
    atomic_write_json(os.path.join(out_dir, "significance.json"), tests)
    # every row's columns (rows written before a column existed leave it empty), nested results left to the json
    nested = {c for row in rows for c, value in row.items() if isinstance(value, dict)}
    flat = dict.fromkeys(c for row in rows for c in row if c not in nested)
    columns = ["model", "dataset", "seed"] + [c for c in flat if c not in ("model", "dataset", "seed")]
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    bar_chart(summary, os.path.join(out_dir, "results.png"))
    return markdown


def folder_rows(out_dir):
    """Every row that ran in a comparison folder, whatever command ran it: baselines first, then RPORec rows; seeds
    in order."""
    rows = []
    for path in glob.glob(os.path.join(out_dir, "rows", "*.json")):
        with open(path) as handle:
            rows.append(json.load(handle))
    return sorted(rows, key=lambda row: (row["model"].startswith("RPORec"), row["model"], row["seed"]))


def parse_pair(text):
    """``[row, against]`` of a ``ROW:AGAINST`` text (spaces around a name ignored); ValueError when it is not one."""
    parts = [part.strip() for part in text.split(":")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text.strip()!r} is not ROW:AGAINST")
    return parts


def pairs_and_rows_of_command_line(parser, pair_texts, out_dir):
    """The ``--pair`` texts parsed and the folder's rows, for a script that reads a comparison folder;
    ``parser.error`` on a text that is not ``ROW:AGAINST`` or a folder without rows."""
    try:
        pairs = [parse_pair(text) for text in pair_texts]
    except ValueError as err:
        parser.error(f"--pair: {err}")
    rows = folder_rows(out_dir)
    if not rows:
        parser.error(f"no rows in {out_dir}/rows")
    return pairs, rows


def folder_pairs(out_dir):
    """The paired tests a folder's table asks for beyond the automatic ones (e.g. between rows of different
    suffixes): the ``ROW:AGAINST`` lines of its pairs.txt. ValueError naming a line that is not one."""
    path = os.path.join(out_dir, PAIRS_FILE)
    if not os.path.isfile(path):
        return []
    pairs = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                pairs.append(parse_pair(line))
            except ValueError as err:
                raise ValueError(f"{path}, line {number}: {err}") from None
    return pairs


def add_folder_pairs(out_dir, pairs):
    """Keep ``pairs`` ([row, against]) in the folder's pairs.txt, so every later table of the folder has them."""
    kept = folder_pairs(out_dir)
    wanted = kept + [list(pair) for pair in pairs]
    unique = [pair for index, pair in enumerate(wanted) if pair not in wanted[:index]]
    if unique == kept:
        return
    lines = [f"{row}:{against}\n" for row, against in unique]
    atomic_write_bytes(os.path.join(out_dir, PAIRS_FILE), "".join(lines).encode())


def names_with_mixed_settings(rows):
    """{name: [one command per set of settings]} of the row names whose seeds ran with different settings (e.g. a run
    with an extra override and no ``--suffix``). Rows must reproduce (``reproduces``)."""
    commands = {}
    for row in rows:
        commands.setdefault(row["model"], {}).setdefault(settings_key(row["command"]), row["command"])
    return {name: list(by_settings.values()) for name, by_settings in commands.items() if len(by_settings) > 1}


def check_folder_rows(rows):
    """The rows of a folder's table pool by name, so every row must be what its name runs today. ValueError naming
    the rows whose command would not run them again (a plugin default or a config file they name changed since:
    under their name they would pool with the rows run under the new values), else the names whose seeds ran with
    different settings. OSError where a config file a row names is missing (rows name them relative to the
    repository root, where they run)."""
    stale = [row for row in rows if not reproduces(row)]
    if stale:
        raise ValueError("rows whose command would not run them again (a plugin default or a config file they name "
                         "changed since, or the command cannot be read); in each row's json, add a suffix for what it "
                         "ran to `model` and the old values to `command` (the key stays): "
                         + ", ".join(f"{row['model']} seed {row['seed']}" for row in stale))
    mixed = names_with_mixed_settings(rows)
    if mixed:
        raise ValueError("rows of one name that ran with different settings (any setting but the seed counts; rerun "
                         "one of them with a --suffix, or rename it in its json's `model`): "
                         + "; ".join(f"{name}: {' vs '.join(found)}" for name, found in mixed.items()))


def refuse_unfit_folder(parser, out_dir, planned=()):
    """``parser.error`` where the folder's rows, with the ``planned`` ones (specs of the rows a command is about to
    run), cannot make one table (``check_folder_rows``) or its pairs.txt is not readable; a command line's check
    before it runs or writes anything."""
    planned_rows = [{"model": spec["label"], "seed": spec["seed"], "command": spec["command"], "key": spec["key"]}
                    for spec in planned]
    try:
        check_folder_rows(folder_rows(out_dir) + planned_rows)
        folder_pairs(out_dir)
    except ValueError as err:
        parser.error(str(err))
    except OSError as err:
        parser.error(f"{err} (run from the repository root)")


def write_folder_outputs(out_dir):
    """``write_outputs`` of every row in the folder, with the folder's extra pairs: one table per folder, whichever
    commands ran its rows."""
    return write_outputs(folder_rows(out_dir), out_dir, extra_pairs=folder_pairs(out_dir))


def parse_value(text):
    """A command-line value as RecBole's command-line parser reads it (a Python literal, true or false in any case,
    else the text itself), so a row runs with the values its command gives RecBole when rerun."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {"true": True, "false": False}.get(text.lower(), text)


def parse_overrides(items):
    """``--key=value`` command-line items -> ({key: value}, [items that are not of that form]). A value holding "="
    is rejected: RecBole's parser would ignore the whole item."""
    overrides, rejected = {}, []
    for item in items:
        if item.startswith("--") and item.count("=") == 1:
            key, value = item[2:].split("=", 1)
            overrides[key] = parse_value(value)
        else:
            rejected.append(item)
    return overrides, rejected


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="SASRec,GRU4Rec,BERT4Rec,RPORec-no-reasoning,RPORec-stage1,RPORec",
                        help=f"comma-separated model names or RPORec variants ({', '.join(VARIANTS)})")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", default="2020", help="comma-separated seeds")
    parser.add_argument("--out", default=None, help="output folder (default: saved/compare-<dataset>)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files for every row")
    parser.add_argument("--suffix", default="",
                        help="appended to every row's name, for rows run with extra overrides (e.g. "
                             "--loss_type=sampled_softmax --suffix=-sampled); the overrides are part of the cache "
                             "key either way")
    parser.add_argument("--cached-only", action="store_true",
                        help="write the table from the rows that already ran; run none (skipped rows are listed)")
    args, extra = parser.parse_known_args(argv)
    if args.one:
        _run_one(json.loads(args.one))
        return
    overrides, rejected = parse_overrides(extra)
    if rejected:
        parser.error(f"unrecognised argument {rejected[0]!r} (use --key=value)")
    out_dir = args.out or os.path.join("saved", f"compare-{args.dataset}")
    config_files = args.config_files.split() if args.config_files else None
    missing = [path for path in config_files or [] if not os.path.isfile(path)]
    if missing:
        parser.error(f"no config file {missing[0]!r} (rows name config files relative to the repository root)")
    if ":" in args.suffix:
        parser.error("--suffix cannot hold ':' (pairs.txt names rows as ROW:AGAINST)")
    names, seeds = args.models.split(","), [int(s) for s in args.seeds.split(",")]
    planned = [] if args.cached_only else [row_spec(name, args.dataset, seed, out_dir, config_files, overrides,
                                                     args.suffix) for name in names for seed in seeds]
    # before any row runs: the table pools every row of the folder, and those this command adds, by name
    refuse_unfit_folder(parser, out_dir, planned)
    rows = run_rows(names, args.dataset, seeds, out_dir, config_files, overrides, args.cached_only, args.suffix)
    if not rows:
        parser.error(f"no finished rows for these models and seeds in {out_dir}/rows")
    print(write_folder_outputs(out_dir))
    print(f"[compare] results of every row in {out_dir}/rows in {out_dir}/results.{{md,csv,json,png}} and "
          "significance.json")


if __name__ == "__main__":
    main()
