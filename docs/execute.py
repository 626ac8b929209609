"""Run the website's lectures several at a time into myst-nb's cache, before Sphinx reads them.

Sphinx reads, and so executes, one notebook at a time: on a two-core machine half of it idles
for the whole build. This fills the same jupyter-cache that myst-nb's cache mode reads, with
the same kernel environment, working folder and cell timeout (all taken from docs/conf.py), so
Sphinx then only reads the cache. A lecture whose code is unchanged since its cached run is
skipped; a failing lecture stops the build with its traceback, as Sphinx would.

    python docs/execute.py [--jobs N] [NAME.ipynb ...]
"""
from __future__ import annotations

import argparse
import runpy
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution

from gen3d_course.kernels import IPCKernelManager  # parallel TCP kernels can race for a port

DOCS = Path(__file__).resolve().parent
CONF = runpy.run_path(str(DOCS / "conf.py"))  # sets the kernels' environment, syncs docs/lectures/


def _execute(path: Path):
    notebook = nbformat.read(path, as_version=4)
    result = single_nb_execution(notebook, cwd=str(path.parent), allow_errors=False,
                                 timeout=CONF["nb_execution_timeout"], meta_override=True,
                                 kernel_manager_class=IPCKernelManager)
    return path, notebook, result.time, result.exc_string if result.err else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once")
    parser.add_argument("names", nargs="*", help="lecture files (default: all of docs/lectures/)")
    args = parser.parse_args(argv)
    lectures = sorted((DOCS / "lectures").glob("*.ipynb"))
    if args.names:
        lectures = [p for p in lectures if p.name in args.names]
    cache = get_cache(CONF["nb_execution_cache_path"])
    todo = []
    for path in lectures:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(path)
    todo.sort(key=lambda p: p.stat().st_size, reverse=True)  # big lectures first: fewer idle tails
    print(f"executing {len(todo)} of {len(lectures)} lectures, {args.jobs} at a time", flush=True)
    failed = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for path, notebook, seconds, error in pool.map(_execute, todo):
            if error:
                failed.append(path.name)
                print(f"{path.name} failed:\n{error}", file=sys.stderr, flush=True)
                continue
            record = cache.add_nb_to_project(str(path))
            cache.cache_notebook_bundle(CacheBundleIn(notebook, record.uri, data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            print(f"{path.name}: {seconds:.0f} s", flush=True)
    if failed:
        print(f"{len(failed)} lecture(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
