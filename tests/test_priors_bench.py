"""The shipped Bunny-MNIST prior beats the fitted Gaussian's exact denoiser on held-out digits."""

from __future__ import annotations

import pytest
import torch

from conftest import needs_data


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@needs_data
def test_bunny_mnist_learned_beats_gaussian_on_test_digits():
    from geoinv.io import list_shipped_priors
    from geoinv.priors import bench_denoising

    if "bunny-mnist" not in list_shipped_priors():
        pytest.skip("bunny-mnist checkpoint not shipped")
    rows = bench_denoising("bunny-mnist", n_test=100, seed=1, harmonic=False)
    by = {(r["method"], r["sigma"]): r for r in rows}
    for s in (0.05, 0.1, 0.2, 0.5):
        learned, gauss = by[("learned", s)], by[("gaussian", s)]
        assert learned["n"] == 100 and learned["data_range"] == 1.0
        # measured margins on all 500 test digits: 0.43 / 0.66 / 0.84 / 0.81 dB
        assert learned["psnr"] > gauss["psnr"] + 0.2, (s, learned["psnr"], gauss["psnr"])
