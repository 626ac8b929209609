"""render.occupancy and the renderer's skipping: fewer field queries, the same image."""
import torch

from gen3d_course.render import cameras
from gen3d_course.render.occupancy import OccupancyGrid
from gen3d_course.render.rays import render_image

torch.set_num_threads(1)


def test_occupancy_grid_covers_the_ball_and_nothing_far(ball_field):
    grid = OccupancyGrid(ball_field.density, (-0.5, 0.5), res=16)
    inside = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 0.5 - 0.25
    inside = inside[inside.norm(dim=-1) < 0.25]
    assert grid(inside).all()
    assert not grid(torch.tensor([[0.45, 0.45, 0.45], [0.0, 0.0, 0.9]])).any()  # a far corner, outside
    ball, grown = 4 / 3 * torch.pi * 0.25 ** 3, 4 / 3 * torch.pi * (0.25 + 3 / 16) ** 3
    assert ball < grid.fraction < grown


def test_skipping_renders_the_same_image_with_fewer_queries(ball_field):
    queries = []

    class Counting(torch.nn.Module):
        density = ball_field.density

        def forward(self, p, d):
            queries.append(len(p))
            return ball_field(p, d)

    field, c2w = Counting(), cameras.look_at([0.3, 0.4, 1.4])
    kw = dict(n_samples=32, n_importance=16, background=1.0)
    plain = render_image(field, c2w, 24, 24, 30.0, **kw)
    everything = sum(queries)
    queries.clear()
    grid = OccupancyGrid(ball_field.density, (-0.5, 0.5), res=32)
    skipped = render_image(field, c2w, 24, 24, 30.0, occupancy=grid, min_transmittance=1e-3, **kw)
    assert sum(queries) < everything / 3
    for key in ("rgb", "acc", "depth"):
        assert torch.allclose(skipped[key], plain[key], atol=2e-3), key
