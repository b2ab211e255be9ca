"""Prior checkpoints: ``<name>.safetensors`` (all tensors) + ``<name>.json`` (everything else).

Nothing is ever pickled or unpickled: the JSON sidecar holds the configuration needed to
rebuild the model (backbone type and hyper-parameters), the domain fingerprint, event
shape, data normalization, the geoinv version and training statistics; the safetensors
file holds the weights, the Gaussian base and the graph hierarchy buffers.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from geoinv._version import __version__
from geoinv.errors import CheckpointError
from geoinv.io._files import atomic_write_json, check_weights_dtype, read_json, read_tensors, write_tensors

__all__ = ["save_prior", "load_prior", "load_shipped_prior", "list_shipped_priors", "FORMAT", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

FORMAT = "geoinv-prior"
FORMAT_VERSION = 1


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _gaussian_tensors(g) -> dict[str, torch.Tensor]:
    return {"base.mean": g.mean, "base.eigvecs": g.eigvecs, "base.eigvals": g.eigvals}


def _gaussian_meta(g) -> dict:
    return {"floor": float(g.floor), "shrinkage": getattr(g, "shrinkage", None), "rank": int(g.eigvecs.shape[1]),
            "name": g.name, "fingerprint": g.fingerprint}


def save_prior(prior: Any, path: str | os.PathLike, *, training: dict | None = None,
               config: dict | None = None, weights_dtype: str = "float32") -> tuple[Path, Path]:
    """Save a :class:`~geoinv.priors.EDMDenoiser` or :class:`~geoinv.priors.GaussianPrior`.

    Parameters
    ----------
    prior : EDMDenoiser or GaussianPrior
    path : path
        ``dir/name`` (a ``.safetensors`` / ``.json`` suffix is ignored); writes
        ``dir/name.safetensors`` and ``dir/name.json``, each atomically (temporary file
        plus ``os.replace``; the JSON, which records the weights' sha256, is written last).
    training : dict, optional
        Training statistics (defaults to ``prior.training_stats`` when present).
    config : dict, optional
        The training configuration (stored for provenance; defaults to ``prior.train_config``).
    weights_dtype : {"float32", "float16"}
        Storage precision of the network weights (``backbone.*``); ``"float16"`` halves their
        bytes and they load as float32. The Gaussian base and the data statistics stay exact.

    Returns
    -------
    (Path, Path)
        The safetensors and JSON paths.
    """
    from geoinv.priors import GaussianPrior
    from geoinv.priors.edm import EDMDenoiser

    check_weights_dtype(weights_dtype)
    st_path, js_path = _paths(path)
    meta: dict[str, Any] = {
        "weights_dtype": weights_dtype,
        "format": FORMAT, "format_version": FORMAT_VERSION, "geoinv_version": __version__,
        "name": prior.name, "fingerprint": prior.fingerprint, "event_shape": list(prior.event_shape),
        "training": training if training is not None else getattr(prior, "training_stats", {}),
        "train_config": config if config is not None else getattr(prior, "train_config", None),
    }
    if isinstance(prior, EDMDenoiser):
        tensors = {f"backbone.{k}": v for k, v in prior.backbone.state_dict().items()}
        tensors["data_mean"] = prior.data_mean
        meta["kind"] = "edm"
        meta["edm"] = {"sigma_data": prior.sigma_data, "data_std": prior.data_std, "residual": prior.residual,
                       "base_input": prior.base_input,
                       "backbone": {"type": prior.backbone.kind, "config": prior.backbone.get_config()}}
        if prior.base is not None:
            tensors.update(_gaussian_tensors(prior.base))
            meta["gaussian"] = _gaussian_meta(prior.base)
    elif isinstance(prior, GaussianPrior):
        tensors = _gaussian_tensors(prior)
        meta["kind"] = "gaussian"
        meta["gaussian"] = _gaussian_meta(prior)
    else:
        raise TypeError(f"save_prior saves EDMDenoiser or GaussianPrior, got {type(prior).__name__}")
    half = [k for k in tensors if k.startswith("backbone.")] if weights_dtype == "float16" else ()
    dtypes, sha = write_tensors(st_path, tensors, metadata={"format": FORMAT, "name": prior.name}, float16=half)
    meta["tensors"] = {k: {"dtype": dtypes[k], "shape": list(t.shape)} for k, t in tensors.items()}
    meta["sha256"] = sha
    atomic_write_json(js_path, meta)
    return st_path, js_path


def _check_version(meta: dict, where: Path) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a geoinv prior checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    fv = meta.get("format_version")
    if fv != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has checkpoint format version {fv}, this geoinv ({__version__}) reads version {FORMAT_VERSION}; "
            "use the geoinv version that wrote it or re-train"
        )
    ver = str(meta.get("geoinv_version", ""))
    try:
        major = int(ver.split(".")[0])
        minor = int(ver.split(".")[1])
    except (ValueError, IndexError):
        raise CheckpointError(f"{where} has an unreadable geoinv version {ver!r}") from None
    cur_major, cur_minor = (int(v) for v in __version__.split(".")[:2])
    if major != cur_major or (major == 0 and minor > cur_minor):
        raise CheckpointError(
            f"{where} was written by geoinv {ver}, which is incompatible with this geoinv {__version__}; "
            "install a compatible version or re-train"
        )


def _gaussian_from(tensors: dict, meta: dict):
    from geoinv.priors import GaussianPrior

    g = meta["gaussian"]
    prior = GaussianPrior(tensors["base.mean"], eigvecs=tensors["base.eigvecs"], eigvals=tensors["base.eigvals"],
                          floor=g["floor"], fingerprint=g.get("fingerprint"), name=g.get("name", "gaussian"))
    if g.get("shrinkage") is not None:
        prior.shrinkage = g["shrinkage"]
    return prior


def load_prior(path: str | os.PathLike) -> Any:
    """Load a prior saved by :func:`save_prior`.

    Raises
    ------
    CheckpointError
        Missing sidecar or weights, corrupted or truncated weights (sha256 / parse),
        a foreign file (not a geoinv checkpoint, unexpected keys or tensor shapes), or an
        incompatible checkpoint format / geoinv version.
    """
    from geoinv.priors.backbones import BACKBONES
    from geoinv.priors.edm import EDMDenoiser

    st_path, js_path = _paths(path)
    if not st_path.exists() and not js_path.exists():
        raise CheckpointError(f"no checkpoint at {st_path.with_suffix('')} (.safetensors + .json)")
    meta = read_json(js_path)
    _check_version(meta, js_path)
    manifest = meta.get("tensors")
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{js_path} lists no tensors; not a geoinv checkpoint")
    tensors, st_meta = read_tensors(st_path, {k: v["dtype"] for k, v in manifest.items()}, meta.get("sha256"))
    if st_meta.get("format") != FORMAT:
        raise CheckpointError(f"{st_path} was not written by geoinv (no '{FORMAT}' metadata)")
    if set(tensors) != set(manifest):
        extra, missing = sorted(set(tensors) - set(manifest)), sorted(set(manifest) - set(tensors))
        raise CheckpointError(f"{st_path} does not match its sidecar: unexpected keys {extra[:5]}, missing keys {missing[:5]}")
    for k, spec in manifest.items():
        if list(tensors[k].shape) != list(spec["shape"]):
            raise CheckpointError(f"{st_path}: tensor {k!r} has shape {list(tensors[k].shape)}, the sidecar says {spec['shape']}")
    kind = meta.get("kind")
    try:
        if kind == "gaussian":
            prior = _gaussian_from(tensors, meta)
        elif kind == "edm":
            e = meta["edm"]
            btype = e["backbone"]["type"]
            if btype not in BACKBONES:
                raise CheckpointError(f"{js_path}: unknown backbone type {btype!r} (known: {sorted(BACKBONES)})")
            bt = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
            backbone = BACKBONES[btype].from_config(e["backbone"]["config"], bt)
            backbone.load_state_dict(bt, strict=True)
            base = _gaussian_from(tensors, meta) if e.get("residual") else None
            prior = EDMDenoiser(backbone, e["sigma_data"], base=base, base_input=bool(e.get("base_input", False)),
                                data_mean=tensors["data_mean"], data_std=e["data_std"], fingerprint=meta.get("fingerprint"),
                                event_shape=tuple(meta["event_shape"]), name=meta.get("name", "edm"))
            prior.eval()
        else:
            raise CheckpointError(f"{js_path}: unknown prior kind {kind!r}")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{st_path} could not be rebuilt into a prior (foreign or mismatched checkpoint): {exc}") from exc
    prior.training_stats = meta.get("training") or {}
    prior.train_config = meta.get("train_config")
    prior.geoinv_version = meta.get("geoinv_version")
    return prior


def _shipped_dir() -> Path:
    return Path(str(resources.files("geoinv") / "checkpoints"))


def list_shipped(folder: Path, fmt: str) -> dict[str, str]:
    """``{name: domain fingerprint}`` of the checkpoints of format ``fmt`` in ``folder``."""
    out = {}
    if not folder.is_dir():
        return out
    for js in sorted(folder.glob("*.json")):
        if not js.with_suffix(".safetensors").exists():
            continue
        try:
            meta = json.loads(js.read_text())
        except ValueError:
            continue
        if meta.get("format") == fmt:
            out[js.stem] = meta.get("fingerprint")
    return out


def list_shipped_priors() -> dict[str, str]:
    """Priors shipped in ``geoinv/checkpoints``: ``{name: domain fingerprint}``."""
    return list_shipped(_shipped_dir(), FORMAT)


def load_shipped_prior(name: str) -> Any:
    """Load a shipped prior by name (see :func:`list_shipped_priors`)."""
    names = list_shipped_priors()
    if name not in names:
        raise CheckpointError(f"no shipped prior named {name!r}; shipped: {', '.join(names) or 'none'}")
    return load_prior(_shipped_dir() / name)
