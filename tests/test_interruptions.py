"""Real interruptions: a run killed with SIGKILL, then the same command again."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import torch
import yaml

from conftest import RUNNER, mini_config
from rporec_recbole import run_recbole_rporec


def _store_files(reasoning_dir):
    return glob.glob(os.path.join(reasoning_dir, "ml-mini", "*", "reasoning.jsonl"))


def _store_lines(reasoning_dir):
    files = _store_files(reasoning_dir)
    if not files:
        return []
    with open(files[0]) as handle:
        return handle.read().splitlines()


def _runner(config_file):
    return [sys.executable, RUNNER, "--model=RPORec", "--dataset=ml-mini",
            f"--config_files={config_file}"]


def _kill_when(config_file, cwd, ready, timeout=300):
    """Start the runner, SIGKILL it once ``ready()`` holds (or it ended, or ``timeout`` passed)."""
    process = subprocess.Popen(_runner(config_file), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline and not _safely(ready):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _safely(ready):
    try:
        return ready()
    except FileNotFoundError:  # a checkpoint folder replaced between the glob and the read
        return False


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


def test_kill_during_reasoning_generation_then_rerun_resumes(mini_movielens, tmp_path):
    # one prompt per generation call and long completions, so the kill lands in the middle of the train prompts
    config = mini_config(mini_movielens, tmp_path, generation_batch_size=1, max_new_tokens=160)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    reasoning_dir = config["reasoning_dir"]

    _kill_when(config_file, tmp_path, lambda: len(_store_lines(reasoning_dir)) >= 3)
    before = _store_lines(reasoning_dir)
    assert 3 <= len(before) < 40, "the kill must land while the 40 training prompts are being generated"
    # generation is seeded by (seed, policy, prompts), so a rerun that regenerated everything would write the same
    # lines: mark the finished entries, and only a rerun that keeps them leaves the marks in place
    store_file = _store_files(reasoning_dir)[0]
    with open(store_file) as handle:
        finished, _, torn = handle.read().rpartition("\n")  # a line the kill tore has no newline yet
    marked = [json.dumps({"key": json.loads(line)["key"], "text": f"kept {n}"})
              for n, line in enumerate(finished.splitlines())]
    with open(store_file, "w") as handle:
        handle.write("".join(line + "\n" for line in marked) + torn)

    subprocess.run(_runner(config_file), cwd=tmp_path, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    assert len(_store_files(reasoning_dir)) == 1  # the same store, not a new one beside it
    after = _store_lines(reasoning_dir)
    keys = [json.loads(line)["key"] for line in after]
    assert len(keys) == len(set(keys))  # exactly one entry per prompt
    assert len(after) > 40  # train, valid and test prompts all done
    # what was there before the kill was kept, not regenerated (a line torn by the kill is the only loss)
    assert after[:len(marked)] == marked


def test_resumed_stage1_matches_an_uninterrupted_run(mini_movielens, tmp_path):
    uninterrupted = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
        mini_movielens, tmp_path / "full", epochs=3, stopping_step=10))
    first_part = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
        mini_movielens, tmp_path / "part", epochs=1, stopping_step=10))
    last_state = _read_json(os.path.join(first_part["checkpoint"], "last", "trainer_state.json"))
    assert last_state["epoch"] == 0 and "optimizer" in last_state and "rng" in last_state
    resumed = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
        mini_movielens, tmp_path / "part", epochs=3, stopping_step=10, resume=first_part["checkpoint"]))
    assert resumed["checkpoint"] == first_part["checkpoint"]
    for metric, value in uninterrupted["test_result"].items():
        assert abs(resumed["test_result"][metric] - value) < 1e-6, metric
    assert resumed["best_valid_result"] == uninterrupted["best_valid_result"]
    # regression: a resumed run reported only its own process's training time, not that of the epochs it inherited
    assert 0 < last_state["train_seconds"] <= first_part["train_seconds"]
    assert resumed["train_seconds"] > last_state["train_seconds"]
    # the epochs of both processes are counted, and the tested epoch is the uninterrupted run's
    assert first_part["epochs"] == 1 and resumed["epochs"] == uninterrupted["epochs"] == 3
    assert resumed["best_epoch"] == uninterrupted["best_epoch"] is not None


def test_kill_during_stage1_then_resume_continues_from_the_last_epoch(mini_movielens, tmp_path):
    config = mini_config(mini_movielens, tmp_path, epochs=8, stopping_step=100)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    states = os.path.join(config["checkpoint_dir"], "RPORec-*", "last", "trainer_state.json")
    _kill_when(config_file, tmp_path, lambda: any(_read_json(path)["epoch"] >= 1 for path in glob.glob(states)))
    (folder,) = glob.glob(os.path.join(config["checkpoint_dir"], "RPORec-*"))
    killed_at = _read_json(os.path.join(folder, "last", "trainer_state.json"))["epoch"]
    assert 1 <= killed_at < 7, "the kill must land during stage 1"

    config_file.write_text(yaml.safe_dump({**config, "resume": folder, "state": "INFO"}))
    rerun = subprocess.run(_runner(config_file), cwd=tmp_path, check=True, capture_output=True, text=True)
    assert f"training resumes at epoch {killed_at + 1}" in rerun.stdout + rerun.stderr  # not from epoch 0
    final = _read_json(os.path.join(folder, "last", "trainer_state.json"))
    assert final["epoch"] == 7  # went on to the configured end in the same folder
    assert glob.glob(os.path.join(config["checkpoint_dir"], "RPORec-*")) == [folder]


def test_kill_during_rl_then_resume_continues_from_the_last_rl_step(mini_movielens, tmp_path):
    from test_grpo_trainer import RL_RUN

    config = mini_config(mini_movielens, tmp_path, **{**RL_RUN, "rl_steps": 8, "rl_eval_step": 0})
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    steps = os.path.join(config["checkpoint_dir"], "RPORec-*-rl", "step-*", "trainer_state.json")
    _kill_when(config_file, tmp_path, lambda: any(_read_json(path)["step"] >= 2 for path in glob.glob(steps)))
    (rl_dir,) = glob.glob(os.path.join(config["checkpoint_dir"], "RPORec-*-rl"))
    killed_at = max(_read_json(path)["step"] for path in glob.glob(steps))
    assert 2 <= killed_at < 8, "the kill must land during RL"

    config_file.write_text(yaml.safe_dump({**config, "resume": rl_dir[:-len("-rl")]}))
    done = subprocess.run(_runner(config_file), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (final,) = glob.glob(steps)
    state = _read_json(final)
    assert state["step"] == 8 and [h["step"] for h in state["history"]] == list(range(1, 9))
    assert glob.glob(os.path.join(config["checkpoint_dir"], "RPORec-*-rl")) == [rl_dir]  # same run, same folder


def _content_reward(self, completions):
    """A reward that varies between completions (the tiny random LLM never earns RPORec's format-gated one)."""
    from rporec_recbole.rewards import REWARD_COMPONENTS

    totals = torch.tensor([sum(ids) % 97 / 97 for ids in completions.token_ids], dtype=torch.float32)
    return totals, {name: totals for name in REWARD_COMPONENTS}


def test_resumed_rl_matches_an_uninterrupted_run(mini_movielens, tmp_path, monkeypatch):
    """4 RL steps in one go vs 2 steps, then a resume to 4 from the step-2 checkpoint: the same adapter weights and
    the same stage-2 test metrics (reasoning regenerated by the tuned policy included)."""
    from test_grpo_trainer import RL_RUN, run_and_keep_trainer
    from rporec_recbole import grpo_trainer

    monkeypatch.setattr(grpo_trainer.RecHeadRewards, "__call__", _content_reward)
    def run(folder, steps, **extra):
        config = {**RL_RUN, "rl_eval_step": 0, "rl_learning_rate": 1e-2, "rl_max_completion_length": 6,
                  "rl_steps": steps, **extra}
        return run_and_keep_trainer(monkeypatch, mini_config(mini_movielens, tmp_path / folder, **config))

    full_result, full = run("full", 4)
    _, part = run("part", 2)
    checkpoint = os.path.join(part.rl_checkpoint_dir, "step-000002")
    resumed_result, resumed = run("part", 4, rl_resume_checkpoint=checkpoint)
    trained = dict(full.rl.pair.policy.named_parameters())
    after_two_steps = dict(part.rl.pair.policy.named_parameters())
    moved = 0.0
    for name, param in resumed.rl.pair.policy.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param, trained[name], atol=1e-6), name
            moved = max(moved, float((param - after_two_steps[name]).detach().abs().max()))
    assert moved > 1e-4, "steps 3-4 must change the adapter, or the comparison shows nothing"
    assert resumed.policy_id == full.policy_id
    assert _tuned_reasoning(tmp_path / "part", resumed.policy_id) == _tuned_reasoning(tmp_path / "full", full.policy_id)
    for metric, value in full.stage_results["stage2"]["test"].items():
        assert abs(resumed.stage_results["stage2"]["test"][metric] - value) < 1e-6, metric
    # the resumed run's training time holds the first process's (reasoning, stage 1, RL steps 1-2) too
    before = _read_json(os.path.join(checkpoint, "trainer_state.json"))["train_seconds"]
    assert before > 0 and resumed.train_seconds_before_resume == before
    assert resumed_result["train_seconds"] > before
    # and its stage-1 epochs and tested epoch (regression: a run resumed in RL reported 0 epochs and none tested)
    assert (resumed_result["epochs"], resumed_result["best_epoch"]) == (full_result["epochs"], full_result["best_epoch"])
    assert full_result["epochs"] > 0 and full_result["best_epoch"] is not None


def _tuned_reasoning(run_dir, policy):
    """{prompt key: completion} that the policy generated for valid and test in this run's reasoning store."""
    for settings in glob.glob(str(run_dir / "reasoning" / "ml-mini" / "*" / "settings.json")):
        if _read_json(settings)["policy"] == policy:
            with open(os.path.join(os.path.dirname(settings), "reasoning.jsonl")) as handle:
                return {entry["key"]: entry["text"] for entry in map(json.loads, handle)}
    raise AssertionError(f"no reasoning of policy {policy} in {run_dir}")


def test_resuming_a_finished_training_tests_the_best_epoch_and_trains_no_further(mini_movielens, tmp_path,
                                                                                 monkeypatch):
    """Regressions: a run killed after early stopping fired (before its test) trained one more epoch on resume, and
    resuming a run whose training was over saved its last epoch's weights over the best epoch's (RecBole's fit)."""
    from recbole.trainer import Trainer

    # valid scores that fall epoch after epoch, so the best epoch is the first whatever the training does (a fixed
    # seed alone gave a best epoch before the last on one machine and the last one on another)
    real_valid_epoch, epochs_validated = Trainer._valid_epoch, []

    def falling_valid_score(self, valid_data, show_progress=False):
        _, valid_result = real_valid_epoch(self, valid_data, show_progress)
        epochs_validated.append(1)
        return 1.0 / len(epochs_validated), valid_result

    monkeypatch.setattr(Trainer, "_valid_epoch", falling_valid_score)
    finished = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
        mini_movielens, tmp_path, epochs=3, stopping_step=3))
    state_file = os.path.join(finished["checkpoint"], "last", "trainer_state.json")
    state = _read_json(state_file)
    assert state["epoch"] == 2 and (finished["epochs"], finished["best_epoch"]) == (3, 0)
    with open(os.path.join(finished["checkpoint"], "trainer_state.json")) as handle:
        assert json.load(handle)["epoch"] == 0  # the best epoch: its weights are not the last epoch's
    for epochs in (3, 6):  # all epochs done; more epochs configured, but early stopping had fired
        if epochs == 6:  # the state early stopping leaves: more epochs without improvement than allowed
            with open(state_file, "w") as handle:
                json.dump({**state, "cur_step": 4}, handle)
        resumed = run_recbole_rporec("RPORec", "ml-mini", config_dict=mini_config(
            mini_movielens, tmp_path, epochs=epochs, stopping_step=3, resume=finished["checkpoint"]))
        assert _read_json(state_file)["epoch"] == 2  # no epoch trained after the last one
        for metric, value in finished["test_result"].items():
            assert abs(resumed["test_result"][metric] - value) < 1e-6, metric
        assert resumed["best_valid_result"] == finished["best_valid_result"]
        # nothing trained in this process: the row's training time is that of the epochs it inherited
        assert resumed["train_seconds"] >= state["train_seconds"] > 0
        assert (resumed["epochs"], resumed["best_epoch"]) == (3, 0)  # what it inherited, reported as it ran
