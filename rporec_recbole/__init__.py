"""RPORec as a RecBole plugin: ``RPORec`` (model), ``RPORecTrainer``, ``Config`` and ``run_recbole_rporec``."""
from rporec_recbole.compat import import_recbole_models

import_recbole_models()  # first: RecBole's SINE would otherwise switch on anomaly detection for the process

from rporec_recbole.config import Config
from rporec_recbole.model import RPORec
from rporec_recbole.quick_start import run_recbole_rporec
from rporec_recbole.registry import get_model, get_trainer
from rporec_recbole.trainer import RPORecTrainer

__all__ = ["Config", "RPORec", "RPORecTrainer", "get_model", "get_trainer", "run_recbole_rporec"]
