import math

import torch

from sena_cli.config import NoiseParams
from sena_cli.method.noise import corrupt, image_seed, scheduler


def _closed_form_alpha_bar(t, start=1e-5, end=5e-3, steps=1000):
    betas = [start + (end - start) / (1 + math.exp(-x)) for x in torch.linspace(-6, 6, steps).tolist()]
    prod = 1.0
    for b in betas[: t + 1]:
        prod *= 1 - b
    return prod


def test_schedule_matches_the_method():
    sched = scheduler(NoiseParams())
    abar = sched.alphas_cumprod[600].item()
    assert math.sqrt(abar) == pytest_approx(0.7342, 1e-3)
    assert math.sqrt(1 - abar) == pytest_approx(0.679, 1e-3)
    assert abar == pytest_approx(_closed_form_alpha_bar(600), 1e-5)


def pytest_approx(value, tol):
    import pytest

    return pytest.approx(value, abs=tol)


def test_corruption_is_the_closed_form_and_seeded_per_image():
    params = NoiseParams()
    x0 = torch.linspace(-1, 1, 3 * 8 * 8).reshape(3, 8, 8)
    a = corrupt(x0, params, "img-1")
    assert torch.equal(a, corrupt(x0, params, "img-1"))  # bit-identical rerun
    assert not torch.equal(a, corrupt(x0, params, "img-2"))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(image_seed(params.seed, "img-1")))
    abar = scheduler(params).alphas_cumprod[600]
    assert torch.allclose(a, abar.sqrt() * x0 + (1 - abar).sqrt() * eps, atol=1e-6)


def test_five_dimensional_tensors_work():
    x0 = torch.zeros(1, 2, 3, 4, 4)  # Idefics3-style (batch, images, C, H, W)
    assert corrupt(x0, NoiseParams(), "x").shape == x0.shape
