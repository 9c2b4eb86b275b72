import os
import shutil
import sys

import pytest
import recbole
import torch

from rporec_recbole import Config
from rporec_recbole.llm import TINY_RANDOM_LLM, load_llm, load_tokenizer

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(REPOSITORY, "run_recbole_rporec.py")
# The benchmark scripts are top-level modules (they import each other by name, as when run as scripts): the tests
# import them the same way.
BENCHMARKS = os.path.join(REPOSITORY, "benchmarks")
sys.path.append(BENCHMARKS)


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's real tokenizer (SmolLM2), left padding."""
    return load_tokenizer(TINY_RANDOM_LLM)


@pytest.fixture()
def tiny_llm():
    """A fresh 2-layer random Llama in fp32, seeded, with the real tokenizer's vocabulary."""
    return load_llm(TINY_RANDOM_LLM, dtype=torch.float32, seed=0)


def toy_dataset_config(tmp_path, histories, titles=None):
    """A SASRec config over a dataset ``toy`` written from ``{user: [item, ...]}`` in time order, with an item
    ``title`` field (``{item: text}``, RecBole's space-separated token_seq) when ``titles`` is given."""
    folder = tmp_path / "toy"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{user}\t{item}\t{time}" for user, items in histories.items() for time, item in enumerate(items)]
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    load_col = {"inter": ["user_id", "item_id", "timestamp"]}
    if titles is not None:
        items = ["item_id:token\ttitle:token_seq"] + [f"{item}\t{title}" for item, title in titles.items()]
        (folder / "toy.item").write_text("\n".join(items) + "\n")
        load_col["item"] = ["item_id", "title"]
    return Config(model="SASRec", dataset="toy", config_dict={
        "data_path": str(tmp_path), "load_col": load_col, "state": "WARNING", "show_progress": False})


ML100K_DIR = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")


@pytest.fixture(scope="session")
def mini_movielens(tmp_path_factory):
    """The first 40 users of RecBole's ml-100k as a dataset called ``ml-mini`` (all items keep their text)."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "ml-mini"
    folder.mkdir()
    with open(os.path.join(ML100K_DIR, "ml-100k.inter")) as source:
        header, *rows = source.read().splitlines()
    kept = [row for row in rows if int(row.split("\t")[0]) <= 40]
    (folder / "ml-mini.inter").write_text("\n".join([header] + kept) + "\n")
    shutil.copy(os.path.join(ML100K_DIR, "ml-100k.item"), folder / "ml-mini.item")
    return str(root)


def mini_config(data_path, tmp_path, **overrides):
    """A config dict for fast end-to-end runs on ``ml-mini`` with the tiny random LLM."""
    config = {
        "data_path": data_path, "checkpoint_dir": str(tmp_path / "saved"),
        "reasoning_dir": str(tmp_path / "reasoning"), "llm_path": TINY_RANDOM_LLM, "llm_dtype": "float32",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "movie_title", "release_year", "class"]},
        "item_title_field": "movie_title", "item_text_fields": ["release_year", "class"],
        "metrics": ["Recall", "MRR", "NDCG", "Hit"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
        "epochs": 1, "max_new_tokens": 8, "generation_batch_size": 16, "show_progress": False,
        "train_batch_size": 64, "head_layers": 1, "head_heads": 2, "history_window": 5,
        "log_wandb": False, "state": "WARNING", "rl": False,
    }
    config.update(overrides)
    return config


def mini_model(data_path, tmp_path, **overrides):
    """``(config, model, splits)``: RPORec built on ml-mini's training split (unseeded and on the CPU, unlike the
    runner)."""
    from rporec_recbole import Config, RPORec
    from rporec_recbole.quick_start import load_data

    config = Config(model="RPORec", dataset="ml-mini", config_dict=mini_config(data_path, tmp_path, **overrides))
    _, splits = load_data(config)
    return config, RPORec(config, splits[0]._dataset), splits
