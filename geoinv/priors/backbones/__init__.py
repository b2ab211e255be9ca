"""Backbones ``F(x, c_noise)`` for :class:`~geoinv.priors.EDMDenoiser`.

All take and return the canonical layout (B, N, C), are conditioned on the noise level
through an embedding and FiLM, have a zero-initialisable last layer (so they can learn a
correction on top of a Gaussian denoiser), take no ``device=`` argument, and keep every
structural tensor in buffers (checkpoints are safetensors-only).

* :class:`MLPBackbone` - residual MLP on the flattened field (fast baseline);
* :class:`GraphUNet` - multiscale graph U-Net for meshes and spheres (shared sparse adjacency);
* :class:`UNet2d` - small 2-D U-Net for grids, optionally periodic.

None of them imports torch_geometric.
"""

from geoinv.priors.backbones._common import Backbone, FiLM, NoiseEmbedding, parse_config
from geoinv.priors.backbones._graph import GraphNetConfig, GraphUNet, build_hierarchy, laplacian_eigenvectors
from geoinv.priors.backbones._mlp import MLPBackbone, MLPConfig
from geoinv.priors.backbones._unet import UNet2d, UNetConfig

BACKBONES = {"mlp": MLPBackbone, "graph": GraphUNet, "unet": UNet2d}

__all__ = [
    "Backbone", "NoiseEmbedding", "FiLM", "parse_config", "BACKBONES",
    "MLPBackbone", "MLPConfig", "GraphUNet", "GraphNetConfig", "build_hierarchy", "laplacian_eigenvectors",
    "UNet2d", "UNetConfig",
]
