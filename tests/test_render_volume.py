"""Volume rendering laws."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.render.volume import volume_render


@given(seed=st.integers(0, 10_000), scale=st.floats(0.0, 100.0))
@settings(max_examples=40, deadline=None)
def test_weights_are_non_negative_and_sum_to_at_most_one(seed, scale):
    g = torch.Generator().manual_seed(seed)
    sigmas = scale * torch.rand(8, 16, generator=g)
    t = torch.sort(torch.rand(8, 16, generator=g) * 4, dim=1).values
    out = volume_render(sigmas, torch.rand(8, 16, 3, generator=g), t, far=5.0)
    assert (out["weights"] >= 0).all()
    assert (out["acc"] <= 1 + 1e-5).all()
    assert torch.allclose(out["acc"], out["weights"].sum(1))


def test_empty_space_shows_background_and_opaque_wall_shows_its_colour():
    t = torch.linspace(0, 1, 10).expand(2, 10)
    colors = torch.zeros(2, 10, 3)
    colors[:, 3] = torch.tensor([1.0, 0.0, 0.0])
    sigmas = torch.zeros(2, 10)
    sigmas[1, 3] = 1e6
    out = volume_render(sigmas, colors, t, far=1.2, background=0.5)
    assert torch.allclose(out["rgb"][0], torch.full((3,), 0.5))
    assert torch.allclose(out["rgb"][1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)
    assert abs(out["depth"][1].item() - t[1, 3].item()) < 1e-4


def test_constant_density_matches_beer_lambert():
    t = torch.linspace(0, 2, 201)[None]
    out = volume_render(torch.full((1, 201), 0.7), torch.ones(1, 201, 1), t, far=2.0, background=0.0)
    assert abs(out["acc"].item() - (1 - torch.exp(torch.tensor(-0.7 * 2.0))).item()) < 1e-4


def test_shape_errors_are_clear():
    import pytest
    with pytest.raises(ValueError, match="must be \\(R, S\\)"):
        volume_render(torch.zeros(2, 3), torch.zeros(2, 4, 3), torch.zeros(2, 3))


def test_volume_render_per_ray_far_and_terms():
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(3, 6, generator=g), 1).values
    sigmas, colors = 5 * torch.rand(3, 6, generator=g), torch.rand(3, 6, 3, generator=g)
    far = torch.tensor([1.1, 1.5, 2.0])
    out = volume_render(sigmas, colors, t, far=far)
    for r in range(3):
        one = volume_render(sigmas[r:r + 1], colors[r:r + 1], t[r:r + 1], far=float(far[r]))
        assert torch.allclose(out["rgb"][r], one["rgb"][0])
    assert torch.allclose(out["weights"], out["alpha"] * out["transmittance"])
    assert torch.allclose(out["transmittance"][:, 0], torch.ones(3))
