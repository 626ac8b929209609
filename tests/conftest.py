"""Hypothesis without its per-example deadline: these tests check properties, not speed (budgets
are measured in benchmarks/), and a 200 ms deadline fails at random on a loaded CI machine."""
from hypothesis import settings

settings.register_profile("gen3d", deadline=None)
settings.load_profile("gen3d")
