"""Every random input of the released checks is drawn afresh in each grading run: no check module
seeds its own generator (``checks.seeded`` mixes the run's salt in; a fixed seed would not)."""
import re
from pathlib import Path

import gen3d_course.checks as checks

CHECKS = Path(checks.__file__).parent


def test_checks_draw_their_inputs_from_seeded():
    own = [f"{path.name}:{i}" for path in sorted(CHECKS.glob("*.py")) if path.name != "__init__.py"
           for i, line in enumerate(path.read_text().splitlines(), 1)
           if re.search(r"Generator\(\)\.manual_seed|torch\.manual_seed\((?!seeded|int\(torch\.randint\(.*generator=)|default_rng\(", line)]
    assert not own, f"draw check inputs with checks.seeded(seed), not a generator of their own: {own}"


def test_seeded_is_the_notebooks_seed_outside_a_grading_run_and_salted_inside():
    plain = torch_draw(checks.seeded(3))
    assert plain == torch_draw(__import__("torch").Generator().manual_seed(3))
    with checks.fresh_inputs(b"run one"):
        one = torch_draw(checks.seeded(3))
    with checks.fresh_inputs(b"run two"):
        two = torch_draw(checks.seeded(3))
    assert len({plain, one, two}) == 3


def torch_draw(generator):
    import torch
    return tuple(torch.rand(4, generator=generator).tolist())
