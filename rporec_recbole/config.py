"""``Config``: RecBole's configurator, able to see plugin models and their ``properties/`` yamls.

Precedence is RecBole's: command line > config dict > config files > plugin yamls > RecBole's yamls.
"""
import os

import torch
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from rporec_recbole.compat import numpy_aliases
from rporec_recbole.registry import get_model, plugin_model_names


def find_properties_dir(package_dir):
    """The plugin's default yamls: the copy a wheel installs inside the package (setup.py maps ``properties/``
    there), else ``properties/`` beside the package in a source checkout or an editable install."""
    installed = os.path.join(package_dir, "properties")
    holds_defaults = os.path.isfile(os.path.join(installed, "RPORec.yaml"))
    return installed if holds_defaults else os.path.join(os.path.dirname(package_dir), "properties")


PROPERTIES_DIR = find_properties_dir(os.path.dirname(os.path.abspath(__file__)))


def plugin_yamls(model, dataset):
    """The plugin's own yamls for ``model`` on ``dataset`` that exist, in the order they are read."""
    model_yaml = os.path.join(PROPERTIES_DIR, f"{model}.yaml")
    if model in plugin_model_names() and not os.path.isfile(model_yaml):
        # without it the model would run on RecBole's defaults alone, silently
        raise FileNotFoundError(f"{model_yaml} is missing: the plugin was installed without its properties/ "
                                f"folder (install it with install.sh, or pip install from the repository root)")
    paths = (model_yaml, os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"))
    return [path for path in paths if os.path.isfile(path)]


class Config(RecBoleConfig):
    def compatibility_settings(self):
        numpy_aliases()

    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str):
            model = get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in plugin_yamls(model, dataset):
            keys = self._update_internal_config_dict(path)
            if os.path.basename(os.path.dirname(path)) == "dataset":
                self.parameters["Dataset"] += [k for k in keys if k not in self.parameters["Dataset"]]

    def _set_default_parameters(self):
        """A cross-entropy sequential model trains without negative sampling: RecBole 1.2.1 refuses its own
        default ``train_neg_sample_args`` for it, so the defaults (RecBole's, and RPORec's negatives for
        ``loss_type: sampled_softmax``) are dropped unless the user set them."""
        if (self.final_config_dict.get("loss_type") == "CE"
                and self.internal_config_dict["MODEL_TYPE"] == ModelType.SEQUENTIAL
                and "train_neg_sample_args" not in self.external_config_dict):
            self.final_config_dict["train_neg_sample_args"] = None
        super()._set_default_parameters()

    def _init_device(self):
        """Pick the device without setting ``CUDA_VISIBLE_DEVICES`` (RecBole's version pins every process to
        one GPU, which breaks ``accelerate launch``); the process rank comes from the launcher's ``LOCAL_RANK``."""
        gpu_id = self.final_config_dict["gpu_id"]
        if isinstance(gpu_id, (tuple, list)):
            gpu_id = ",".join(map(str, gpu_id))
        self.final_config_dict["gpu_id"] = str(gpu_id)
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = self.final_config_dict.get("use_gpu", True) and torch.cuda.is_available()
        self.final_config_dict["local_rank"] = local_rank
        self.final_config_dict["single_spec"] = True  # RecBole's own DDP path is not used; stage 2 uses Accelerate
        self.final_config_dict["device"] = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
