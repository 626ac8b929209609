"""Hypothesis without its per-example deadline: these tests check properties, not speed (budgets
are measured in benchmarks/), and a 200 ms deadline fails at random on a loaded CI machine."""
import pytest
import torch
from hypothesis import settings

settings.register_profile("gen3d", deadline=None)
settings.load_profile("gen3d")


class _Ball(torch.nn.Module):
    """An analytic radiance field: a red ball of radius 0.25 (density 300 inside)."""

    def density(self, p):
        return 300.0 * (p.norm(dim=-1) < 0.25).float()

    def forward(self, p, d):
        return self.density(p), torch.tensor([1.0, 0.0, 0.0]).expand(len(p), 3)


@pytest.fixture
def ball_field():
    return _Ball()
