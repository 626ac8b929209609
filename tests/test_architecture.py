"""The library's floor plan (docs/architecture.md): a module imports only from its own floor or below."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gen3d_course"

# Lowest first. A top-level module or subpackage of gen3d_course not listed here fails the test,
# so a new one gets a floor on purpose.
FLOORS = [
    {"config"},
    {"render", "geometry"},
    {"data"},
    {"train", "checkpoints"},
    {"models"},
    {"experiments", "viz", "checks"},
    {"assign", "links", "kernels", "grade", "cli"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _room(module: str) -> str:
    """'gen3d_course.render.rays' → 'render'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """Every gen3d_course module ``path`` imports (function-local imports included), with its line."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t.startswith("gen3d_course.") or t == "gen3d_course":
                yield t, node.lineno


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_room_has_a_floor():
    rooms = {_room(_module_name(p)) for p in MODULES}
    assert rooms <= set(FLOOR), f"give these a floor in FLOORS and docs/architecture.md: {rooms - set(FLOOR)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_floor(path):
    here = _room(_module_name(path))
    upward = [f"line {line}: {target} (floor {FLOOR.get(_room(target))} > {FLOOR[here]})"
              for target, line in _imports(path)
              if _room(target) in FLOOR and FLOOR[_room(target)] > FLOOR[here]]
    assert not upward, f"{path.relative_to(PACKAGE)} (floor {FLOOR[here]}) imports from above: {upward}"
