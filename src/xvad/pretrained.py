"""The model that ships inside the package, used when no checkpoint is given."""
from __future__ import annotations

import os

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
DEFAULT_NAME = "xvad-fight-lite0.pt"


def default_checkpoint() -> str:
    """Path of the shipped checkpoint, or a clear error when this build ships none."""
    from .checkpoint import CheckpointError

    path = os.path.join(WEIGHTS_DIR, DEFAULT_NAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no pretrained model ships with this version of xvad; "
                              "pass --checkpoint (Python: load_model(path)) with a model from `xvad train`")
    return path
