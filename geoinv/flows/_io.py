"""Flow checkpoints: ``<name>.safetensors`` (weights) + ``<name>.json`` (config, provenance), never pickle.

The latent basis of a flow is derived from its prior (:func:`~geoinv.flows.latent_basis`),
so a flow shipped for a shipped prior stores only its network weights plus the sha256 of
the basis it was trained with; loading re-derives the basis from the prior and refuses a
mismatch. A flow whose prior cannot be named (an in-memory GaussianPrior) stores the basis.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from geoinv._version import __version__
from geoinv.errors import CheckpointError, DomainMismatchError
from geoinv.flows._model import PRIOR_BASES, ConditionalFlow, FlowConfig, latent_basis
from geoinv.io._checkpoint import _paths

__all__ = ["save_flow", "load_flow", "load_shipped_flow", "has_shipped_flow", "shipped_flow_noise_std", "serves_noise",
           "list_shipped_flows", "FLOW_FORMAT"]

log = logging.getLogger(__name__)

FLOW_FORMAT = "geoinv-flow"
FLOW_FORMAT_VERSION = 2  # 2: layers act on the deviation from the base mean (v1 flows must be re-trained)


def basis_sha256(basis: dict) -> str:
    """Checksum of a latent basis (float64 bytes of mean, eigvecs, eigvals, floor)."""
    h = hashlib.sha256()
    for k in ("mean", "eigvecs", "eigvals", "floor"):
        h.update(torch.as_tensor(basis[k], dtype=torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


def save_flow(flow: ConditionalFlow, path: str | os.PathLike, *, prior: str | None = None,
              include_basis: bool | None = None, training: dict | None = None,
              config: dict | None = None, weights_dtype: str = "float32") -> tuple[Path, Path]:
    """Save a :class:`ConditionalFlow` (atomic writes, weights sha256 in the sidecar).

    Parameters
    ----------
    flow : ConditionalFlow
    path : path
        ``dir/name``; writes ``dir/name.safetensors`` and ``dir/name.json``.
    prior : str, optional
        Shipped name or checkpoint path of the flow's prior, recorded so that
        :func:`load_flow` can rebuild the latent basis.
    include_basis : bool, optional
        Store the latent basis in the file (default: only when ``prior`` is not given).
    training, config : dict, optional
        Training statistics / configuration for provenance.
    weights_dtype : {"float32", "float16"}
        Storage precision of the network weights (``net.*``); ``"float16"`` halves their bytes
        and they load as float32. A stored latent basis stays exact.
    """
    from geoinv.io import atomic_write_json, check_weights_dtype, write_tensors

    check_weights_dtype(weights_dtype)
    st_path, js_path = _paths(path)
    if include_basis is None:
        include_basis = prior is None
    tensors = {f"net.{k}": v for k, v in flow.state_dict().items()}
    basis = flow.basis()
    if include_basis:
        tensors.update({f"basis.{k}": torch.as_tensor(v, dtype=torch.float64) for k, v in basis.items()})
    prior_sha = None
    if prior is not None:
        from geoinv import io

        if prior in io.list_shipped_priors():
            prior_sha = io.read_json(Path(str(resources.files("geoinv") / "checkpoints")) / f"{prior}.json").get("sha256")
    meta: dict[str, Any] = {
        "prior_sha256": prior_sha, "weights_dtype": weights_dtype,
        "format": FLOW_FORMAT, "format_version": FLOW_FORMAT_VERSION, "geoinv_version": __version__,
        "name": flow.name, "prior": prior, "fingerprint": flow.fingerprint, "event_shape": list(flow.event_shape),
        "flow": flow.config.to_dict(), "basis_sha256": basis_sha256(basis), "basis_included": bool(include_basis),
        "training": training if training is not None else getattr(flow, "training_stats", {}),
        "train_config": config if config is not None else getattr(flow, "train_config", None),
    }
    half = [k for k in tensors if k.startswith("net.")] if weights_dtype == "float16" else ()
    dtypes, sha = write_tensors(st_path, tensors, metadata={"format": FLOW_FORMAT, "name": flow.name}, float16=half)
    meta["tensors"] = {k: {"dtype": dtypes[k], "shape": list(t.shape)} for k, t in tensors.items()}
    meta["sha256"] = sha
    atomic_write_json(js_path, meta)
    return st_path, js_path


def load_prior_spec(spec: str) -> Any:
    """A prior from a shipped prior's name or a checkpoint path (what a flow's ``prior`` field holds)."""
    from geoinv import io

    if spec in io.list_shipped_priors():
        return io.load_shipped_prior(spec)
    return io.load_prior(spec)


def load_flow(path: str | os.PathLike, prior: Any = None) -> ConditionalFlow:
    """Load a flow saved by :func:`save_flow`.

    Parameters
    ----------
    path : path
    prior : Prior or str, optional
        The prior (object, shipped name or checkpoint path) giving the latent basis when the
        file does not store it; default: the prior recorded in the file.

    Raises
    ------
    CheckpointError
        Missing/corrupted/foreign files, incompatible versions, or a prior whose latent basis
        differs from the one the flow was trained with.
    """
    from geoinv.io import read_json, read_tensors

    st_path, js_path = _paths(path)
    meta = read_json(js_path)
    if meta.get("format") != FLOW_FORMAT:
        raise CheckpointError(f"{js_path} is not a geoinv flow checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != FLOW_FORMAT_VERSION:
        raise CheckpointError(f"{js_path} has flow format version {meta.get('format_version')}, this geoinv reads "
                              f"{FLOW_FORMAT_VERSION}; re-train the flow")
    manifest = meta.get("tensors") or {}
    tensors, st_meta = read_tensors(st_path, {k: v["dtype"] for k, v in manifest.items()}, meta.get("sha256"))
    if st_meta.get("format") != FLOW_FORMAT or set(tensors) != set(manifest):
        raise CheckpointError(f"{st_path} does not match its sidecar {js_path}")
    cfg = FlowConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["flow"].items()})
    spec = None
    if not meta.get("basis_included") or cfg.base in PRIOR_BASES:  # the prior is needed: resolve it once
        spec = prior if prior is not None else meta.get("prior")
        if spec is None:
            why = ("stores no latent basis" if not meta.get("basis_included")
                   else f"has base {cfg.base!r} (needs its diffusion prior)")
            raise CheckpointError(f"{js_path} {why} and names no prior; pass prior=")
        if isinstance(spec, str):
            spec = load_prior_spec(spec)
    if meta.get("basis_included"):
        basis = {k[len("basis."):]: v for k, v in tensors.items() if k.startswith("basis.")}
    else:
        _warn_if_prior_changed(meta, js_path)
        if meta.get("fingerprint") is not None and getattr(spec, "fingerprint", None) not in (None, meta["fingerprint"]):
            raise DomainMismatchError(f"flow {meta.get('name')!r} is for domain {meta['fingerprint']}, the prior is on "
                                      f"{spec.fingerprint}")
        basis = latent_basis(spec, cfg.rank)
    if basis_sha256(basis) != meta.get("basis_sha256"):
        raise CheckpointError(f"{js_path}: the prior's latent basis differs from the one the flow was trained with "
                              "(another prior version?); re-train the flow for this prior")
    flow = ConditionalFlow(basis, cfg, fingerprint=meta.get("fingerprint"), name=meta.get("name", "flow"))
    if cfg.base in PRIOR_BASES:
        flow.attach_prior(spec)
    try:
        flow.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{st_path} could not be loaded into its flow: {exc}") from exc
    flow.eval()
    flow.training_stats = meta.get("training") or {}
    flow.train_config = meta.get("train_config")
    flow.prior_spec = meta.get("prior")
    return flow


def _warn_if_prior_changed(meta: dict, where: Path) -> None:
    """Log a warning when the shipped prior a flow was distilled from has been re-trained since."""
    from geoinv import io

    name, sha = meta.get("prior"), meta.get("prior_sha256")
    if sha is None or name not in io.list_shipped_priors():
        return
    cur = io.read_json(Path(str(resources.files("geoinv") / "checkpoints")) / f"{name}.json").get("sha256")
    if cur != sha:
        log.warning("%s was distilled from another version of the prior %r (weights sha256 %s..., now %s...); "
                    "its Gaussian part is unchanged, but re-train the flow (geoinv train-flow) to match the new "
                    "learned prior", where, name, sha[:8], str(cur)[:8])


def _shipped_dir() -> Path:
    return Path(str(resources.files("geoinv") / "checkpoints" / "flows"))


def list_shipped_flows() -> dict[str, str]:
    """Flows shipped in ``geoinv/checkpoints/flows``: ``{name: domain fingerprint}``."""
    from geoinv.io._checkpoint import list_shipped

    return list_shipped(_shipped_dir(), FLOW_FORMAT)


_ANY = object()  # has_shipped_flow: whatever noise the flow was trained for


def serves_noise(trained: float, noise_std: float | None) -> bool:
    """Whether a flow trained for measurement noise std ``trained`` serves ``noise_std`` (None = noise-free)."""
    return math.isclose(float(noise_std or 0.0), float(trained), rel_tol=1e-6, abs_tol=1e-12)


def shipped_flow_noise_std(name: str) -> float | None:
    """The measurement noise std the shipped flow of the shipped prior ``name`` was trained for; None when no such
    flow (or prior) ships."""
    from geoinv import io

    if name not in list_shipped_flows() or name not in io.list_shipped_priors():
        return None
    return float(io.read_json(_shipped_dir() / f"{name}.json")["flow"]["noise_std"])


def has_shipped_flow(name: str, noise_std: Any = _ANY) -> bool:
    """True when a flow for the shipped prior ``name`` ships with geoinv (and that prior too), and, when
    ``noise_std`` is given (None = noise-free), when it was trained for that measurement noise (an amortized flow
    serves one noise level)."""
    trained = shipped_flow_noise_std(name)
    return trained is not None and (noise_std is _ANY or serves_noise(trained, noise_std))


def load_shipped_flow(name: str, prior: Any = None) -> ConditionalFlow:
    """Load the shipped flow of the shipped prior ``name``."""
    names = list_shipped_flows()
    if name not in names:
        raise CheckpointError(f"no shipped flow named {name!r}; shipped: {', '.join(names) or 'none'}")
    return load_flow(_shipped_dir() / name, prior=prior)
