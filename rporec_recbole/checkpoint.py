"""Checkpoints without pickle: a folder of safetensors files plus json, written atomically.

RecBole 1.2.1 saves ``torch.save({'config': Config, ...})`` and reloads it with ``torch.load``, which torch >= 2.6
refuses (``weights_only``) and which would unpickle arbitrary objects. Here tensors go to safetensors, everything
else to json, and ``trainer_state.json`` (written last) records the sha256 of every tensor file, so a checkpoint
torn by a crash is detected and refused instead of being loaded as garbage.
"""
import hashlib
import json
import os
import time

import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
# Keys RecBole derives while building a Config: saving them would feed derived values back in on reload.
_DERIVED_KEYS = {"device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "local_rank", "single_spec",
                 "valid_neg_sample_args", "test_neg_sample_args", "config_files"}


class CorruptCheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or its files do not match the hashes recorded at save time."""


def atomic_write_bytes(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def _atomic_save_tensors(path, tensors):
    tmp = f"{path}.tmp{os.getpid()}"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flatten_optimizer_state(optimizer):
    """Split ``optimizer.state_dict()`` into a flat tensor dict and a json-able remainder."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            name = f"{param_id}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value
            else:
                scalars[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors, meta):
    state = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(folder, model_state, optimizer=None, trainer_state=None, extra_files=None):
    """Write ``model_state`` (and the optimizer) into ``folder``; ``trainer_state`` must be json-able.
    ``extra_files`` maps more safetensors file names to tensor dicts, hashed like the others."""
    os.makedirs(folder, exist_ok=True)
    files = {MODEL_FILE: model_state, **(extra_files or {})}
    meta = dict(trainer_state or {})
    if optimizer is not None:
        files[OPTIMIZER_FILE], meta["optimizer"] = flatten_optimizer_state(optimizer)
    for name, tensors in files.items():
        _atomic_save_tensors(os.path.join(folder, name), tensors)
    meta["sha256"] = {name: _sha256(os.path.join(folder, name)) for name in files}
    atomic_write_json(os.path.join(folder, STATE_FILE), meta)


def load_checkpoint(folder, device="cpu"):
    """Return ``(model_state, optimizer_state or None, trainer_state)``; raise on a torn or missing checkpoint."""
    state_path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(state_path):
        raise CorruptCheckpointError(f"{folder} is not a complete checkpoint (no {STATE_FILE}).")
    try:
        with open(state_path) as handle:
            meta = json.load(handle)
    except json.JSONDecodeError as err:
        raise CorruptCheckpointError(f"{state_path} is damaged: {err}") from err
    for name, expected in meta.get("sha256", {}).items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or _sha256(path) != expected:
            raise CorruptCheckpointError(f"{path} does not match the checkpoint it was saved with (torn write?).")
    model_state = load_file(os.path.join(folder, MODEL_FILE), device=str(device))
    optimizer_state = None
    if "optimizer" in meta:
        optimizer_tensors = load_file(os.path.join(folder, OPTIMIZER_FILE), device=str(device))
        optimizer_state = unflatten_optimizer_state(optimizer_tensors, meta.pop("optimizer"))
    return model_state, optimizer_state, meta


def _plain(value):
    """``value`` if yaml can write it with safe types, else None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if isinstance(value, dict):
        items = {str(k): _plain(v) for k, v in value.items()}
        return None if any(items[str(k)] is None and v is not None for k, v in value.items()) else items
    return None


def save_config(folder, config):
    """The resolved config as yaml: enough to rebuild the run with ``Config(config_dict=...)``."""
    import yaml

    resolved = {}
    for key, value in config.final_config_dict.items():
        plain = _plain(value)
        if key not in _DERIVED_KEYS and (plain is not None or value is None):
            resolved[key] = plain
    # RecBole appends the dataset name to data_path while building the config; store the folder it started from
    resolved["data_path"] = os.path.dirname(os.path.normpath(config["data_path"]))
    atomic_write_bytes(os.path.join(folder, CONFIG_FILE), yaml.safe_dump(resolved, sort_keys=True).encode())


def load_config_dict(folder):
    """The config a checkpoint was saved with, ready for ``Config(config_dict=...)``."""
    import yaml

    with open(os.path.join(folder, CONFIG_FILE)) as handle:
        saved = yaml.safe_load(handle)
    negatives = saved.get("train_neg_sample_args")
    if isinstance(negatives, dict) and negatives.get("distribution") == "none":
        # RecBole's resolved form of "no negative sampling": fed back in, RecBole refuses it for CE models
        saved["train_neg_sample_args"] = None
    return saved


def claim_checkpoint_folder(base):
    """Create and return a checkpoint folder no other run uses. RecBole names it ``<Model>-<time to the second>``,
    so two runs started in the same second (a parallel comparison) would write and reload each other's weights;
    the folder is made with an exclusive ``mkdir`` and a ``-2``, ``-3`` ... suffix where the name is taken."""
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    folder, suffix = base, 1
    while True:
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            suffix += 1
            folder = f"{base}-{suffix}"


def release_unused_folder(folder):
    """Remove a claimed checkpoint folder that nothing was written to (a run not saved, or one that resumes
    into an earlier run's folder)."""
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


class SafeCheckpointMixin:
    """Gives a RecBole trainer safetensors checkpoints (``saved/<Model>-<time>/``) instead of pickled ``.pth``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        base = os.path.splitext(self.saved_model_file)[0]
        # one writer per machine; under ``accelerate launch`` the RPORec trainer hands its name to the others
        self.saved_model_file = claim_checkpoint_folder(base) if config["local_rank"] == 0 else base
        # training time of the epochs a resumed run inherits (kept in ``last/``), so a row killed and resumed
        # reports the time of all its epochs, not only those of its last process
        self.train_seconds_before_resume = 0.0
        # reported with the results, over every process that resumed the run: epochs trained, and the epoch
        # (RecBole's 0-based index, as its log prints it) whose weights are tested; None for weights this run loaded
        self.epochs_trained, self.best_epoch = 0, None
        self.fit_started = None  # set by the first fit of the run (RPORec's starts before reasoning generation)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        folder = kwargs.pop("saved_model_file", self.saved_model_file)
        if epoch >= 0:  # RecBole saves the epoch that improved on the best; -1: weights this run loaded
            self.best_epoch = epoch
        trainer_state = {"epoch": epoch, "cur_step": self.cur_step, "best_valid_score": float(self.best_valid_score),
                         "model": self.config["model"]}
        save_checkpoint(folder, self.model.state_dict(), self.optimizer, trainer_state)
        save_config(folder, self.config)
        if verbose:
            self.logger.info(f"Saving current: {folder}")

    def resume_checkpoint(self, resume_file):
        """Continue from a checkpoint folder: its ``last/`` state (the last finished epoch, random streams
        included) where there is one, else the best-epoch state RecBole-style."""
        from rporec_recbole.resume import load_last

        resume_file = str(resume_file)
        last = load_last(resume_file, self.device)
        if last is None:
            model_state, optimizer_state, meta = load_checkpoint(resume_file, self.device)
            self.best_epoch = meta["epoch"] if meta["epoch"] >= 0 else None
        else:
            model_state, optimizer_state, meta, rng_tensors = last
            self._pending_rng = (rng_tensors, meta["rng"])
            self.best_valid_result = meta["best_valid_result"] or None
            self.restore_progress(meta)
        if meta.get("model", self.config["model"]).lower() != self.config["model"].lower():
            raise ValueError(f"Checkpoint {resume_file} belongs to model {meta['model']}, not {self.config['model']}.")
        release_unused_folder(self.saved_model_file)
        self.saved_model_file = resume_file
        self.model.load_state_dict(model_state)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.start_epoch = self.epochs_trained = meta["epoch"] + 1
        self.cur_step = meta["cur_step"]
        self.best_valid_score = meta["best_valid_score"]
        if self.cur_step > self.stopping_step:
            # early stopping fired at that epoch (the process died before the test): train no further epoch
            self.start_epoch = self.epochs
        if self.start_epoch >= self.epochs:
            self.logger.info(f"Checkpoint {resume_file} loaded: its training was over, the best epoch is evaluated")
            return
        self.logger.info(f"Checkpoint {resume_file} loaded: training resumes at epoch {self.start_epoch}")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's fit, writing ``last/`` after every evaluated epoch so that ``--resume`` can continue it."""
        from rporec_recbole.resume import restore_rng, save_last

        def after_epoch(epoch, valid_score):
            if saved:
                save_last(self, train_data, epoch)
            if callback_fn:
                callback_fn(epoch, valid_score)

        if self.start_epoch >= self.epochs:
            # a resumed run whose training was over (every epoch done, or early stopping had fired): RecBole's fit
            # would save the weights in memory, the last epoch's, over the best epoch's checkpoint
            self.eval_collector.data_collect(train_data)
            return self.best_valid_score, self.best_valid_result
        restore_rng(self, train_data)
        self.fit_started = self.fit_started or time.time()
        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_epoch)

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        result = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        self.epochs_trained = epoch_idx + 1  # RecBole's index counts the epochs of resumed processes too
        return result

    def train_seconds_so_far(self):
        """Seconds of training since the run first started, over every process that resumed it."""
        return self.train_seconds_before_resume + time.time() - self.fit_started

    def progress(self):
        """What a checkpoint keeps for the results of a run resumed from it: its training time so far, epochs
        trained and tested epoch."""
        return {"train_seconds": self.train_seconds_so_far(), "epochs": self.epochs_trained,
                "best_epoch": self.best_epoch}

    def restore_progress(self, state):
        """Take over ``progress()`` from a checkpoint's state (one written before a field existed leaves it
        unknown)."""
        self.train_seconds_before_resume = state.get("train_seconds", 0.0)
        self.epochs_trained = state.get("epochs", self.epochs_trained)
        self.best_epoch = state.get("best_epoch")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            folder = model_file or self.saved_model_file
            model_state, _, _ = load_checkpoint(folder, self.device)
            self.model.load_state_dict(model_state)
            self.logger.info(f"Loading model structure and parameters from {folder}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


def with_safe_checkpoints(trainer_class):
    """``trainer_class`` with :class:`SafeCheckpointMixin` in front (RecBole's trainers stay untouched)."""
    if issubclass(trainer_class, SafeCheckpointMixin):
        return trainer_class
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {})
