"""Training diffusion priors: typed YAML configs and a resumable EDM training loop.

>>> from geoinv.training import train                       # doctest: +SKIP
>>> result = train("configs/bunny-mnist.yaml")              # doctest: +SKIP
"""

from geoinv.training._config import (
    DataConfig,
    GraphOptions,
    MLPOptions,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    UNetOptions,
    config_from_dict,
    config_to_dict,
    load_config,
)
from geoinv.training._data import Split, load_split, synthetic_fields, train_val
from geoinv.training._train import TrainResult, build_prior, edm_loss, train

__all__ = [
    "train", "TrainResult", "build_prior", "edm_loss", "load_config", "config_from_dict", "config_to_dict",
    "TrainConfig", "DataConfig", "ModelConfig", "OptimConfig", "MLPOptions", "GraphOptions", "UNetOptions",
    "Split", "load_split", "train_val", "synthetic_fields",
]
