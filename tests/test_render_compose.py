"""render.compose: placing a field in the world and composing several (GIRAFFE's σ-weighted sum)."""
import pytest
import torch

from gen3d_course.render.cameras import focal_from_fov, look_at
from gen3d_course.render.compose import compose_fields, place_field
from gen3d_course.render.rays import render_image


def ball(colour, radius=0.3, density=50.0):
    """A constant-density ball of one colour at the origin of its own frame."""
    def field(points, directions):
        sigma = density * (points.norm(dim=-1) < radius).float()
        return sigma, torch.tensor(colour).expand(len(points), 3)
    field.bounds = (-0.5, 0.5)
    return field


def test_composition_sums_densities_and_weights_colours_by_them():
    red, blue = ball((1.0, 0.0, 0.0)), ball((0.0, 0.0, 1.0), density=150.0)
    composed = compose_fields([red, blue])
    points = torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.0, 0.0]])
    sigma, rgb = composed(points, torch.zeros(2, 3))
    assert sigma.tolist() == [200.0, 0.0]
    assert torch.allclose(rgb[0], torch.tensor([0.25, 0.0, 0.75]))
    assert torch.equal(rgb[1], torch.zeros(3))  # empty space carries no weight
    with pytest.raises(ValueError, match="at least one"):
        compose_fields([])


def test_placing_moves_shrinks_and_keeps_optical_depth():
    placed = place_field(ball((1.0, 1.0, 1.0)), translation=(0.4, 0.0, 0.0), scale=0.5)
    sigma, _ = placed(torch.tensor([[0.4, 0.0, 0.0], [0.0, 0.0, 0.0], [0.4, 0.2, 0.0]]), torch.zeros(3, 3))
    assert sigma.tolist() == [100.0, 0.0, 0.0]  # density doubled, radius halved: 0.15
    lo, hi = placed.bounds
    assert torch.allclose(lo, torch.tensor([0.15, -0.25, -0.25])) and torch.allclose(hi, torch.tensor([0.65, 0.25, 0.25]))
    with pytest.raises(ValueError, match="scale"):
        place_field(ball((1.0, 1.0, 1.0)), scale=0.0)


def test_two_placed_objects_render_apart_and_the_nearer_one_occludes():
    left = place_field(ball((1.0, 0.0, 0.0)), (-0.3, 0.0, 0.0), 0.5)
    right = place_field(ball((0.0, 0.0, 1.0)), (0.3, 0.0, 0.0), 0.5)
    scene, focal = compose_fields([left, right]), float(focal_from_fov(32, 40))
    front = render_image(scene, look_at(torch.tensor([0.0, 0.0, 2.0])), 32, 32, focal, n_samples=64)
    alone = render_image(compose_fields([left]), look_at(torch.tensor([0.0, 0.0, 2.0])), 32, 32, focal, n_samples=64)
    mask = alone["acc"] > 0.5
    assert mask.any() and torch.allclose(front["rgb"][mask], alone["rgb"][mask], atol=1e-5)
    along = render_image(scene, look_at(torch.tensor([2.0, 0.0, 0.0])), 32, 32, focal, n_samples=64)
    centre = along["rgb"][16, 16]
    assert centre[2] > 0.9 and centre[0] < 0.1  # the blue ball at x = +0.3 hides the red one
