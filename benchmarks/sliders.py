"""Latency of the live slider panels: decode (or re-mesh) + in-place plotly update, per move.

Usage: python benchmarks/sliders.py   (prints median and max milliseconds per panel)
"""
from __future__ import annotations

import statistics
import time

import numpy as np


def measure(widget, controls, values) -> list[float]:
    """Set each value on the given controls in turn; time each full redraw."""
    times = []
    for control, value in zip(controls, values):
        start = time.perf_counter()
        control.value = value
        times.append(time.perf_counter() - start)
    return times


def gallery():
    from gen3d_course.data import samples
    from gen3d_course.data.shapes import CATEGORIES, make_shape
    from gen3d_course.viz.widgets import mesh_browser

    browser = mesh_browser(lambda category, seed: samples.mesh_of(make_shape(category, seed), 64),
                           category=list(CATEGORIES), seed=(0, 50, 1))
    seed = browser.controls["seed"]
    return measure(browser, [seed] * 10, list(range(1, 11)))


PANELS = {"00 gallery (64³ re-mesh)": gallery}


def main() -> None:
    print("| panel | median ms | max ms |\n|---|---:|---:|")
    for name, panel in PANELS.items():
        times = np.array(panel()) * 1e3
        print(f"| {name} | {statistics.median(times):.0f} | {times.max():.0f} |")


if __name__ == "__main__":
    main()
