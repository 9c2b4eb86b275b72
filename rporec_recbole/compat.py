"""RecBole 1.2.1 on current numpy/torch, without touching RecBole's files.

RecBole's ``Config.compatibility_settings`` re-creates numpy aliases (``np.float`` ...) from names that numpy 2
removed too (``np.float_``), so it fails before any config is read. ``numpy_aliases`` restores what numpy < 1.24
offered (the builtin types), and only the names that are missing: numpy's own names are never overwritten.
RecBole's SINE module turns on autograd's anomaly detection for the whole process when it is imported, which
happens whenever any RecBole sequential model is: ``import_recbole_models`` undoes that side effect.
Everything else RecBole needs fixing (``ray`` imported by ``recbole.quick_start``, pickled ``torch.load``
checkpoints, the FLOPs count, ``CUDA_VISIBLE_DEVICES``) is avoided by using our own quick start, checkpoint
format and device setup instead of patching RecBole.
"""
import numpy as np
import torch

_REMOVED_ALIASES = {
    "bool": bool, "int": int, "float": float, "complex": complex, "object": object, "str": str,
    "long": int, "unicode": str, "float_": np.float64, "complex_": np.complex128, "unicode_": np.str_,
    "bool8": np.bool_,
}


def numpy_aliases():
    """Define the numpy aliases RecBole 1.2.1 uses, where this numpy lacks them."""
    for name, value in _REMOVED_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def import_recbole_models():
    """Import RecBole's sequential models with autograd's anomaly detection left as it was.

    ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at import,
    and the package imports every model, so any RecBole sequential model (and RPORec, built on RecBole's layers)
    trained with anomaly detection on: metrics unchanged, every backward pass ~2.2x slower (measured on a 2-layer
    Transformer here)."""
    before = torch.is_anomaly_enabled()
    import recbole.model.sequential_recommender  # noqa: F401  (the import is the point)

    torch.autograd.set_detect_anomaly(before)
