"""Model and trainer lookup: the plugin's classes first, then RecBole's (RecBole-GNN's pattern).

RecBole's own ``get_model``/``get_trainer`` only search ``recbole.*``, so they cannot see a plugin model.
"""
import importlib
import importlib.util

from recbole.utils import get_trainer as recbole_get_trainer

from rporec_recbole.checkpoint import with_safe_checkpoints

_PLUGIN_MODELS = {"RPORec": "rporec_recbole.model"}
_PLUGIN_TRAINERS = {"RPORec": "rporec_recbole.trainer"}
_RECBOLE_MODEL_PACKAGES = ["general_recommender", "context_aware_recommender", "sequential_recommender",
                           "knowledge_aware_recommender", "exlib_recommender"]


def plugin_model_names():
    return sorted(_PLUGIN_MODELS)


def get_model(model_name):
    """Return the model class called ``model_name`` from this plugin, or else from RecBole."""
    if model_name in _PLUGIN_MODELS:
        return getattr(importlib.import_module(_PLUGIN_MODELS[model_name]), model_name)
    for package in _RECBOLE_MODEL_PACKAGES:
        module_path = f"recbole.model.{package}.{model_name.lower()}"
        try:
            found = importlib.util.find_spec(module_path) is not None
        except ImportError:  # exlib_recommender needs lightgbm/xgboost, which most users lack
            continue
        if found:
            return getattr(importlib.import_module(module_path), model_name)
    known = ", ".join(plugin_model_names())
    raise ValueError(f"Unknown model {model_name!r}: not a plugin model ({known}) nor a RecBole model.")


def get_trainer(model_type, model_name):
    """Return the trainer class for ``model_name``, with checkpoints that never need pickle to reload."""
    if model_name in _PLUGIN_TRAINERS:
        return getattr(importlib.import_module(_PLUGIN_TRAINERS[model_name]), f"{model_name}Trainer")
    return with_safe_checkpoints(recbole_get_trainer(model_type, model_name))
