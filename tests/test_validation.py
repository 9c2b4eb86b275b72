import pytest

from conftest import RUNNER
from rporec_recbole import Config
from rporec_recbole.validation import ConfigValueError, validate_config


@pytest.mark.parametrize("key,value,message", [
    ("top_p", 1.5, r"top_p=1.5 is invalid: expected a number in \(0, 1\]"),
    ("top_p", 0, "top_p=0 is invalid"),
    ("history_window", -3, "history_window=-3 is invalid: expected an integer >= 1"),
    ("history_window", True, "history_window=True is invalid"),
    ("max_new_tokens", "many", "max_new_tokens='many' is invalid"),
    ("loss_type", "BPR", "loss_type='BPR' is invalid: expected 'sampled_softmax' or 'CE'"),
    ("history_window", 80, "history_window=80 exceeds MAX_ITEM_LIST_LENGTH=20"),
    ("rl_num_generations", -4, "rl_num_generations=-4 is invalid: expected an integer >= 2"),
    ("rl_top_p", 1.2, r"rl_top_p=1.2 is invalid: expected a number in \(0, 1\]"),
    ("answer_fusion", "concat", "answer_fusion='concat' is invalid: expected 'replace' \\(the paper\\) or 'add'"),
    ("rl_loss_type", "ppo", "rl_loss_type='ppo' is invalid: expected grpo, dapo or dr_grpo"),
    ("rl_trim_heap_mb", -1, r"rl_trim_heap_mb=-1 is invalid: expected a number of MB >= 0, or ~ \(never\)"),
    ("reasoning_seed", 1.5, r"reasoning_seed=1.5 is invalid: expected an integer >= 0, or ~ \(the run's seed\)"),
])
def test_bad_values_are_named_with_the_rule(key, value, message):
    config = Config(model="RPORec", dataset="ml-100k", config_dict={key: value})
    with pytest.raises(ConfigValueError, match=message):
        validate_config(config)


def test_defaults_are_valid():
    validate_config(Config(model="RPORec", dataset="ml-100k"))


def test_missing_llm_path_is_one_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, RUNNER, "--model=RPORec", "--dataset=ml-100k",
                           f"--llm_path={tmp_path / 'no-such-model'}", "--state=ERROR"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    last_line = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert last_line.startswith("error: llm_path=") and "no-such-model" in last_line


def test_remote_code_stays_off_unless_the_user_turns_it_on(monkeypatch, tmp_path):
    import transformers

    from rporec_recbole import llm

    seen = []

    def fake_from_pretrained(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    for kwargs in ({}, {"trust_remote_code": True}):
        with pytest.raises(llm.LLMNotFoundError):
            llm.load_tokenizer(str(tmp_path), **kwargs)
    assert seen == [False, True]
    assert Config(model="RPORec", dataset="ml-100k")["trust_remote_code"] is False
