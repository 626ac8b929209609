"""The ``gen3d-course`` console script: ``doctor`` checks an installation, ``assign`` builds
the student notebooks from the solutions, ``grade`` scores submitted notebooks with nbval,
``train NAME`` produces a shipped checkpoint."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys

REQUIRED = ("numpy", "scipy", "torch", "trimesh", "skimage", "sklearn", "matplotlib", "plotly",
            "ipywidgets", "tqdm", "nbformat")
# Front-end pieces of the live panels in JupyterLab; without them panels show their static form.
WIDGET_FRONTENDS = ("jupyterlab_widgets", "anywidget")


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, "__version__", "installed")


def doctor() -> int:
    """Print what the course will run with; return 1 if something required is missing."""
    from . import config

    problems = []
    print(f"python      {platform.python_version()} ({sys.executable})")
    for name in REQUIRED:
        version = _version(name)
        print(f"{name:<11} {version or 'MISSING'}")
        if version is None:
            problems.append(f"{name} is not installed")
    try:
        print(f"mode        {config.mode()}  (set GEN3D_MODE=fast|lecture|full)")
    except ValueError as err:
        problems.append(str(err))
    if not problems:
        import torch

        print(f"device      {config.pick_device().type}  (cuda > mps > cpu); "
              f"torch threads {torch.get_num_threads()}")
        from .viz.panels import VIEWS_VARIABLE, form

        try:
            print(f"views       {form()} here  (set {VIEWS_VARIABLE}=live|static|auto; auto is live "
                  f"in JupyterLab and Binder, static on Colab, in VS Code and exports)")
        except ValueError as err:
            problems.append(str(err))
        missing_frontends = [m for m in WIDGET_FRONTENDS if _version(m) is None]
        if missing_frontends:
            print(f"widgets     live panels NOT usable: {', '.join(missing_frontends)} missing "
                  f"(pip install \"gen3d-course[live]\"); panels show their static form")
        else:
            import plotly.graph_objects as go

            go.FigureWidget()
            print("widgets     usable (ipywidgets, plotly FigureWidget)")
    if problems:
        print("\ngen3d-course doctor: NOT ready:\n  - " + "\n  - ".join(problems) +
              "\nRun `make setup` (or `pip install -e .`) in the course folder.", file=sys.stderr)
        return 1
    print("\ngen3d-course doctor: ready.")
    return 0


def assign(solutions: str, assignments: str) -> int:
    """Rewrite the notebooks' badges and install cell from pyproject.toml (in a course checkout:
    the folder above ``solutions``), then build the assignments."""
    from pathlib import Path

    from .assign import build_assignments
    from .links import write_links

    root = Path(solutions).resolve().parent
    if (root / "pyproject.toml").exists():
        for path in write_links(root):
            print(f"relinked {path}")
    for path in build_assignments(solutions, assignments):
        print(f"wrote {path}")
    return 0


def trainable() -> list[str]:
    """Experiment modules that can produce a checkpoint (they define ``train_checkpoint``)."""
    from . import experiments

    names = [m.name for m in pkgutil.iter_modules(experiments.__path__)]
    return sorted(n for n in names
                  if hasattr(importlib.import_module(f"{experiments.__name__}.{n}"), "train_checkpoint"))


def train(name: str) -> int:
    from . import experiments

    # Import only the named module: a broken model elsewhere must not stop this one's training.
    module_names = {m.name for m in pkgutil.iter_modules(experiments.__path__)}
    module = importlib.import_module(f"{experiments.__name__}.{name}") if name in module_names else None
    if not hasattr(module, "train_checkpoint"):
        available = trainable()
        print(f"gen3d-course train: no model named {name!r}; available: "
              f"{', '.join(available) or 'none yet'}.", file=sys.stderr)
        return 2
    metrics = module.train_checkpoint()
    print(f"trained {name}: {metrics}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gen3d-course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="check the installation, device and run mode")
    p_assign = commands.add_parser("assign", help="build assignments/ from solutions/")
    p_assign.add_argument("--solutions", default="solutions")
    p_assign.add_argument("--assignments", default="assignments")
    p_train = commands.add_parser("train", help="train a model and save its shipped checkpoint "
                                                "(set GEN3D_MODE=full for the shipped quality)")
    p_train.add_argument("name")
    p_grade = commands.add_parser("grade", help="run submitted notebooks under nbval; write "
                                                "grades.csv and one feedback file per student")
    p_grade.add_argument("submissions", nargs="?",
                         help="folder with one sub-folder per student (not with --export)")
    p_grade.add_argument("--assignments", default="assignments",
                         help="the released assignments (reference for the check cells)")
    p_grade.add_argument("--hidden", help="instructor-only checks: NN_topic.py per assignment")
    p_grade.add_argument("--out", default="grades", help="where grades.csv and feedback/ go")
    p_grade.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    p_grade.add_argument("--notebook-timeout", type=float, default=900.0,
                         help="seconds per notebook, kernel start included")
    p_grade.add_argument("--jobs", type=int, default=1, help="notebooks graded at once")
    p_grade.add_argument("--rerun", action="store_true",
                         help="grade again the notebooks an earlier run finished")
    p_grade.add_argument("--unit", action="append",
                         help="grade only this assignment (repeatable; default: all submitted)")
    p_grade.add_argument("--memory", type=float, default=4.0,
                         help="GiB of memory for a submission's whole run (where a control group "
                              "can be made) and of address space for each of its processes")
    p_grade.add_argument("--uses-reference", choices=("flag", "zero"), default="flag",
                         help="an answer that calls the library's own reference function: "
                              "flag it (default) or score it 0")
    p_grade.add_argument("--export", choices=("gradescope",),
                         help="write an autograder bundle to OUT/gradescope instead of grading")
    p_grade.add_argument("--unsafe", action="store_true",
                         help="run notebooks without a sandbox, with your permissions (no bwrap)")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "grade":
        from .grade import main_grade

        return main_grade(args)
    if args.command == "train":
        return train(args.name)
    return assign(args.solutions, args.assignments)


if __name__ == "__main__":
    sys.exit(main())
