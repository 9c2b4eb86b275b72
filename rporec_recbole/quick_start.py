"""Quick start: RecBole's ``run_recbole`` for plugin and RecBole models alike, without ``recbole.quick_start``.

``recbole.quick_start`` imports ``ray`` at module level (broken on numpy 2 / current setuptools), so the flow is
written out here with RecBole's own dataset, split, dataloader and evaluator.
"""
import logging
import os
import sys
import time
from logging import getLogger

import yaml
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color

from rporec_recbole.atomic_files import check_atomic_files
from rporec_recbole.checkpoint import load_checkpoint, load_config_dict, release_unused_folder
from rporec_recbole.config import Config
from rporec_recbole.cpu_allocator import keep_freed_memory
from rporec_recbole.per_user import PerUserRecorder
from rporec_recbole.registry import get_model, get_trainer
from rporec_recbole.timing import cpu_model


class DatasetNotFoundError(RuntimeError):
    """The dataset's atomic files are missing and could not be obtained."""


def _recbole_download_urls():
    import recbole

    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")
    with open(path) as handle:
        return yaml.safe_load(handle)


def _download(url, folder, dataset_name, timeout=30):
    """RecBole's download, minus its interactive prompt, its missing timeout and its single-process
    ``barrier()`` crash; RecBole's own helpers unzip and rename the atomic files."""
    import shutil
    import urllib.request

    from recbole.utils.url import extract_zip, rename_atomic_files

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, url.rpartition("/")[2])
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path + ".part", "wb") as out:
        shutil.copyfileobj(response, out)
    os.replace(path + ".part", path)
    extract_zip(path, folder)
    os.unlink(path)
    rename_atomic_files(folder, os.path.splitext(os.path.basename(path))[0], dataset_name)


def ensure_dataset(config):
    """Make sure ``<data_path>/<dataset>.inter`` exists: download known RecBole datasets, else explain."""
    folder, name = config["data_path"], config["dataset"]
    inter_file = os.path.join(folder, f"{name}.inter")
    if os.path.isfile(inter_file):
        return
    if os.path.isdir(folder) and os.listdir(folder):
        raise DatasetNotFoundError(f"Dataset folder {folder} has no {name}.inter. RecBole atomic files are named "
                                   f"<dataset>.inter (and .item, .user): rename or convert yours.")
    url = _recbole_download_urls().get(name)
    if url is None:
        raise DatasetNotFoundError(
            f"Unknown dataset {name!r}: no {inter_file}. Put RecBole atomic files ({name}.inter, optional "
            f"{name}.item) in {folder}/, or set --data_path to the folder that holds {name}/.")
    try:
        getLogger().info(f"Downloading dataset {name} from {url}")
        _download(url, folder, name)
    except Exception as err:  # any network failure ends in the same advice
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not in {folder}/ and downloading it from {url} failed "
            f"({err.__class__.__name__}: {err}). Without internet, download that zip elsewhere and unzip its "
            f"atomic files into {folder}/ (as {name}.inter, {name}.item, {name}.user), or convert the raw public "
            f"files there with `python -m rporec_recbole.prepare` (MovieLens, Amazon).") from None


def load_data(config):
    ensure_dataset(config)
    check_atomic_files(config["data_path"], config["dataset"], config["field_separator"] or "\t")
    dataset = create_dataset(config)
    return dataset, data_preparation(config, dataset)


def load_run(checkpoint, **config_overrides):
    """A finished run rebuilt from its checkpoint folder: ``(config, dataset, (train, valid, test), model)``, with
    the run's saved config (plus ``config_overrides``), its data split and its weights, the model in eval mode."""
    saved = load_config_dict(checkpoint)
    config = Config(model=saved["model"], dataset=saved["dataset"], config_dict={**saved, **config_overrides})
    init_seed(config["seed"], config["reproducibility"])  # the split and samplers as the run had them
    dataset, loaders = load_data(config)
    model = get_model(config["model"])(config, loaders[0]._dataset).to(config["device"])
    model.load_state_dict(load_checkpoint(checkpoint)[0])
    model.eval()
    return config, dataset, loaders, model


def run_recbole_rporec(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True):
    """Train and test one model (plugin or RecBole) on one dataset; returns RecBole's result dict plus timings."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    if config["device"].type == "cpu":
        keep_freed_memory()

    dataset, (train_data, valid_data, test_data) = load_data(config)
    logger.info(dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    if config["resume"]:
        resume(trainer, config, config["resume"])
    start = time.time()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=saved,
                                                      show_progress=config["show_progress"])
    train_seconds = time.time() - start
    eval_start = time.time()
    recorder = PerUserRecorder(trainer)  # after training: only the test and valid evaluations below are kept
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    eval_seconds = time.time() - eval_start
    per_user_test = recorder.evaluations[:]
    valid_start = time.time()
    if valid_data:
        # the tested model once more on valid (already loaded): each user's valid result, for analyses that must
        # choose on valid rather than test
        trainer.evaluate(valid_data, load_best_model=False, show_progress=config["show_progress"])
    per_user_valid = recorder.evaluations[len(per_user_test):]
    per_user_valid_seconds = time.time() - valid_start
    train_seconds += getattr(trainer, "train_seconds_before_resume", 0.0)  # epochs of earlier processes
    if not saved:
        release_unused_folder(trainer.saved_model_file)

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    logger.info(f"test evaluation {eval_seconds:.0f} s, valid re-evaluation (per-user results) "
                f"{per_user_valid_seconds:.0f} s")
    phases = trainer.phases.summary() if hasattr(trainer, "phases") else {}
    for name, phase in phases.items():
        logger.info(f"phase {name}: {phase['seconds']:.0f} s, peak RSS {phase['peak_rss_mb']:.0f} MB")
    outputs = output_locations(trainer, saved)
    for what, where in outputs.items():
        logger.info(set_color(f"{what}: ", "blue") + where)
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "train_seconds": train_seconds,
        "epochs": getattr(trainer, "epochs_trained", None),
        "best_epoch": getattr(trainer, "best_epoch", None),
        "eval_seconds": eval_seconds,  # the test evaluation
        "per_user_valid_seconds": per_user_valid_seconds,  # the valid evaluation after it
        "checkpoint": trainer.saved_model_file if saved else None,
        # RPORec with rl: true reports stage 1 and stage 2 side by side ({stage: {split: metrics}})
        "stage_results": getattr(trainer, "stage_results", {}),
        "rl_history": getattr(trainer, "rl_history", []),
        # each test user's top-k hits: {"test": ...}, or {"stage1": ..., "stage2": ...} after RL
        "per_user_test": dict(zip(list(getattr(trainer, "stage_results", {})) or ["test"], per_user_test)),
        # the same for valid: {"valid": ...}, or {"stage1": ..., "stage2": ...} after RL
        "per_user_valid": dict(zip(list(getattr(trainer, "stage_results", {})) or ["valid"], per_user_valid)),
        "phases": phases,
        # with item_text_share_on_valid: each popularity band's text share, learned and chosen on valid
        "band_shares": getattr(trainer, "chosen_band_shares", None),
        "outputs": outputs,
        "device": describe_device(config["device"]),
    }


def latest_rl_checkpoint(folder):
    """The newest complete RL step folder of a run (``<run>-rl/step-N``), if its RL stage saved one."""
    rl_dir = folder.rstrip(os.sep) + "-rl"
    steps = sorted(name for name in os.listdir(rl_dir) if name.startswith("step-") and ".tmp" not in name) \
        if os.path.isdir(rl_dir) else []
    return os.path.join(rl_dir, steps[-1]) if steps else None


def resume(trainer, config, folder):
    """Continue an interrupted run from its checkpoint folder: in stage 2 when its RL stage saved a step (or
    ``folder`` is such a step), else in stage 1 after the last finished epoch."""
    rl_step = folder if os.path.isdir(os.path.join(folder, "policy")) else latest_rl_checkpoint(folder)
    if rl_step is None:
        trainer.resume_checkpoint(folder)
        return
    config["rl_resume_checkpoint"] = rl_step
    rl_dir = os.path.dirname(os.path.abspath(rl_step))
    if rl_dir.endswith("-rl") and os.path.isdir(rl_dir[:-len("-rl")]):  # RL goes on writing to <run>-rl
        release_unused_folder(trainer.saved_model_file)
        trainer.saved_model_file = rl_dir[:-len("-rl")]
    getLogger().info(f"resuming stage 2 from {rl_step}")


def describe_device(device):
    """'cpu (CPU model, N cores)' or 'cuda:0 (GPU name)': which hardware a run's times belong to."""
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({cpu_model()}, {os.cpu_count()} cores)"


def output_locations(trainer, saved):
    """Where a finished run left its files: checkpoints, log, TensorBoard events, reasoning store."""
    where = {}
    if saved:
        where["checkpoint"] = trainer.saved_model_file
    if getattr(trainer, "rl_checkpoint_dir", None):
        where["RL checkpoints"] = trainer.rl_checkpoint_dir
    log_files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if log_files:
        where["log"] = log_files[0]
    if getattr(trainer, "tensorboard", None) is not None:
        where["TensorBoard"] = trainer.tensorboard.get_logdir()
    if getattr(trainer.model, "use_reasoning", False):  # one sub-folder per generation setting and policy
        where["reasoning store"] = os.path.dirname(trainer.reasoning_store().folder)
    return {what: os.path.abspath(path) for what, path in where.items()}
