"""Resuming an interrupted training run from its last finished epoch (``--resume=<checkpoint folder>``).

After every evaluated epoch the trainer writes ``<checkpoint>/last/``: model, optimizer, early-stopping state and
every random stream the next epochs draw from (torch's, numpy's and Python's global generators and the training
loader's own shuffling generator). A resumed run restores all of them, so it trains on exactly as an
uninterrupted run with the same seed would. ``last/`` is replaced by renaming a complete new folder over it, so a
crash leaves either the previous one or the new one, never a mixture.
"""
import json
import os
import random
import shutil

import numpy as np
import torch
from safetensors.torch import load_file

from rporec_recbole.checkpoint import load_checkpoint, save_checkpoint

LAST = "last"
RNG_FILE = "rng.safetensors"


def _capture_rng(train_data):
    numpy_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "loader": train_data.generator.get_state(),
               "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64))}
    meta = {"numpy": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
            "python": json.loads(json.dumps(random.getstate()))}
    return tensors, meta


def _restore_rng(tensors, meta, train_data):
    torch.set_rng_state(tensors["torch"])
    train_data.generator.set_state(tensors["loader"])
    name, position, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_last(trainer, train_data, epoch):
    """Write ``<checkpoint>/last`` for resuming after ``epoch``."""
    rng_tensors, rng_meta = _capture_rng(train_data)
    state = {"epoch": epoch, "cur_step": trainer.cur_step, "best_valid_score": float(trainer.best_valid_score),
             "best_valid_result": {k: float(v) for k, v in (trainer.best_valid_result or {}).items()},
             "model": trainer.config["model"], "rng": rng_meta, **trainer.progress()}
    final = os.path.join(trainer.saved_model_file, LAST)
    partial, previous = final + ".partial", final + ".previous"
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(partial, trainer.model.state_dict(), trainer.optimizer, state, extra_files={RNG_FILE: rng_tensors})
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.isdir(final):
        os.rename(final, previous)
    os.rename(partial, final)
    shutil.rmtree(previous, ignore_errors=True)


def load_last(folder, device):
    """``(model_state, optimizer_state, trainer_state, rng_tensors)`` of ``folder/last`` (or of the previous one,
    when a crash hit between the two renames); None when the run never finished an epoch."""
    for name in (LAST, LAST + ".previous"):
        path = os.path.join(folder, name)
        if os.path.isfile(os.path.join(path, "trainer_state.json")):
            model_state, optimizer_state, meta = load_checkpoint(path, device)
            return model_state, optimizer_state, meta, load_file(os.path.join(path, RNG_FILE))
    return None


def restore_rng(trainer, train_data):
    """Apply the random streams loaded by ``resume_checkpoint``, once the training loader exists."""
    pending = getattr(trainer, "_pending_rng", None)
    if pending is not None:
        _restore_rng(*pending, train_data)
        trainer._pending_rng = None
