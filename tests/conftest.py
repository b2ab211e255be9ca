"""Shared test setup: offline data directory, seeds, headless rendering probe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data"
if "GEOINV_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["GEOINV_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def has_shared_data() -> bool:
    d = os.environ.get("GEOINV_DATA_DIR")
    return bool(d) and Path(d).is_dir()


needs_data = pytest.mark.skipif(not has_shared_data(), reason="GEOINV_DATA_DIR not set (no ../shared/data)")

_PROBE = (
    "import pyvista as pv; p = pv.Plotter(off_screen=True, window_size=(8, 8)); "
    "p.add_mesh(pv.Sphere()); p.screenshot(); p.close()"
)


@pytest.fixture(scope="session")
def can_render():
    """Skip unless off-screen OpenGL works (VTK segfaults without any GL, so probe in a subprocess)."""
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=180)
    if r.returncode != 0:
        pytest.skip(f"no off-screen OpenGL (probe rc={r.returncode})")
    return True
