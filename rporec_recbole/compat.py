"""RecBole 1.2.1 on current numpy/torch, without touching RecBole's files.

RecBole's ``Config.compatibility_settings`` re-creates numpy aliases (``np.float`` ...) from names that numpy 2
removed too (``np.float_``), so it fails before any config is read. ``numpy_aliases`` restores what numpy < 1.24
offered (the builtin types), and only the names that are missing: numpy's own names are never overwritten.
Everything else RecBole needs fixing (``ray`` imported by ``recbole.quick_start``, pickled ``torch.load``
checkpoints, the FLOPs count, ``CUDA_VISIBLE_DEVICES``) is avoided by using our own quick start, checkpoint
format and device setup instead of patching RecBole.
"""
import numpy as np

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
