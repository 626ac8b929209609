"""render.sampling: the ray box, stratified, inverse-CDF and hierarchical samples."""
import pytest
import torch

from gen3d_course.render.sampling import (hierarchical_samples, points_along_rays, ray_box, sample_pdf,
                                          stratified_samples)
from gen3d_course.render.volume import volume_render


def test_ray_box_intervals():
    origins = torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.1, 0.0, 0.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_box(origins, dirs, (-0.5, 0.5))
    assert hit.tolist() == [True, False, True]
    assert torch.allclose(near, torch.tensor([1.5, near[1].item(), 0.0]))
    assert torch.allclose(far[[0, 2]], torch.tensor([2.5, 0.4]))
    assert near[1] == far[1]  # a miss has an empty interval


def test_stratified_samples_one_per_bin():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.5])
    t = stratified_samples(near, far, 8, generator=torch.Generator().manual_seed(0))
    assert t.shape == (2, 8) and (t.diff(dim=1) >= 0).all()
    bins = ((t - near[:, None]) / (far - near)[:, None] * 8).floor()
    assert torch.equal(bins, torch.arange(8.0).expand(2, 8))
    mid = stratified_samples(1.0, 3.0, 4, n_rays=1, perturb=False)
    assert torch.allclose(mid, torch.tensor([[1.25, 1.75, 2.25, 2.75]]))


def test_sample_pdf_follows_the_weights():
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights = torch.tensor([[0.25, 0.0, 0.75]])
    t = sample_pdf(edges, weights, 20000, generator=torch.Generator().manual_seed(0))
    assert (t.diff(dim=1) >= 0).all()
    share = [((t >= a) & (t < a + 1)).float().mean().item() for a in range(3)]
    assert share[0] == pytest.approx(0.25, abs=0.02) and share[1] < 0.01
    assert share[2] == pytest.approx(0.75, abs=0.02)
    det = sample_pdf(edges, torch.zeros(1, 3), 6, perturb=False)  # empty ray: uniform
    assert torch.allclose(det, torch.tensor([[0.25, 0.75, 1.25, 1.75, 2.25, 2.75]]), atol=1e-3)


def test_hierarchical_samples_concentrate_at_the_surface():
    """A wall at t = 2: fine samples land next to it, far more than stratified ones."""
    t = stratified_samples(1.0, 3.0, 32, n_rays=4, perturb=False)
    sigmas = torch.where(t > 2.0, 200.0, 0.0)
    weights = volume_render(sigmas, torch.zeros(4, 32, 3), t, far=3.0)["weights"]
    t_all, t_fine = hierarchical_samples(t, weights, 64, generator=torch.Generator().manual_seed(0))
    assert t_all.shape == (4, 96) and (t_all.diff(dim=1) >= 0).all() and not t_fine.requires_grad
    near_wall = ((t_fine - 2.05).abs() < 0.1).float().mean()
    assert near_wall > 0.8 > ((t - 2.05).abs() < 0.1).float().mean()


def test_points_along_rays():
    p = points_along_rays(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]),
                          torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.allclose(p[1, 1], torch.tensor([0.0, 4.0, 0.0])) and p.shape == (2, 2, 3)


def test_sample_pdf_inverts_given_uniforms():
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights = torch.tensor([[0.25, 0.0, 0.75]])
    u = torch.tensor([[0.125, 0.4, 0.625]])
    t = sample_pdf(edges, weights, 3, u=u)  # F = (0, 0.25, 0.25, 1) up to the 1e-5 floor
    assert torch.allclose(t, torch.tensor([[0.5, 2.2, 2.5]]), atol=1e-3)
    drawn = torch.rand(2, 5, generator=torch.Generator().manual_seed(0)).sort(dim=1).values
    t_coarse = torch.linspace(0.0, 1.0, 8).expand(2, 8)
    w = torch.rand(2, 8, generator=torch.Generator().manual_seed(1))
    t_all, t_fine = hierarchical_samples(t_coarse, w, 5, u=drawn)
    assert t_fine.shape == (2, 5) and t_all.shape == (2, 13) and (t_all.diff(dim=1) >= 0).all()
    assert torch.equal(hierarchical_samples(t_coarse, w, 5, u=drawn)[1], t_fine)  # no draw: repeatable
    with pytest.raises(ValueError, match="u"):
        sample_pdf(edges, weights, 4, u=u)
