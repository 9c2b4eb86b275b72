"""Model and trainer lookup: the plugin's classes first, then RecBole's (RecBole-GNN's pattern).

RecBole's own ``get_model``/``get_trainer`` only search ``recbole.*``, so they cannot see a plugin model.
"""
import importlib

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from rporec_recbole.checkpoint import with_safe_checkpoints

_PLUGIN_MODELS = {"RPORec": "rporec_recbole.model"}
_PLUGIN_TRAINERS = {"RPORec": "rporec_recbole.trainer"}


def plugin_model_names():
    return sorted(_PLUGIN_MODELS)


def get_model(model_name):
    """Return the model class called ``model_name`` from this plugin, or else from RecBole."""
    if model_name in _PLUGIN_MODELS:
        return getattr(importlib.import_module(_PLUGIN_MODELS[model_name]), model_name)
    try:
        return recbole_get_model(model_name)
    except ValueError:
        known = ", ".join(plugin_model_names())
        raise ValueError(f"Unknown model {model_name!r}: not a plugin model ({known}) nor a RecBole model.") from None


def get_trainer(model_type, model_name):
    """Return the trainer class for ``model_name``, with checkpoints that never need pickle to reload."""
    if model_name in _PLUGIN_TRAINERS:
        return getattr(importlib.import_module(_PLUGIN_TRAINERS[model_name]), f"{model_name}Trainer")
    return with_safe_checkpoints(recbole_get_trainer(model_type, model_name))
