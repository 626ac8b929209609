"""Real-data figures of issue 21: ``load_blender`` peak memory, exact mesh-query speed, NeRF on
the procedural scene written as a Blender scene three times larger than the world cube, and
lecture 08's held-out PSNR against training CPU-seconds (MLP and grid field).

Usage: OMP_NUM_THREADS=1 python benchmarks/real_data.py [memory|sdf|scale|quality ...]   (default:
all; scale trains four NeRFs, about 20 CPU-minutes; quality two, about 10)

Speeds are CPU-seconds (``time.process_time``) and the best of a few repeats, since the
machines this runs on are shared.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOAD = """
import resource, sys, tracemalloc
import gen3d_course.data.nerf_formats as nf
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
views = nf.load_blender(sys.argv[1], "train", downscale=8)
peak = tracemalloc.get_traced_memory()[1]
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak, tuple(views.rgba.shape))
"""


def write_frames(root: Path, n: int = 100, size: int = 800) -> None:
    """n RGBA PNGs of size² (a soft disc with noise: PNG cannot shrink it to nothing) + json."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    y, x = np.mgrid[:size, :size] / size - 0.5
    alpha = (np.hypot(x, y) < 0.35).astype(np.float64)
    frames = []
    for i in range(n):
        rgb = rng.uniform(0, 1, (size, size, 3)) * 0.3 + 0.5
        rgba = np.concatenate([rgb, alpha[..., None]], -1)
        Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(root / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))


def memory(repo: str = ".") -> dict:
    """Peak memory of ``load_blender(downscale=8)`` on 100 frames of 800×800 PNG, in a fresh
    process: max RSS after importing (torch etc.) and after loading, and numpy's traced peak."""
    with tempfile.TemporaryDirectory() as tmp:
        write_frames(Path(tmp))
        out = subprocess.run([sys.executable, "-c", LOAD, tmp], capture_output=True, text=True,
                             check=True, env={"PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}).stdout.split()
    base, peak, traced = (int(v) for v in out[:3])
    return {"rss_after_import_mb": base / 1024, "rss_peak_mb": peak / 1024,
            "load_increase_mb": (peak - base) / 1024, "traced_peak_mb": traced / 2**20}


def chair_mesh(faces: int = 50_000):
    """A collection chair meshed finely enough to have about ``faces`` triangles, normalised."""
    from gen3d_course.data import samples
    from gen3d_course.data.meshes import normalize_mesh
    from gen3d_course.data.shapes import make_shape

    res = 48
    while len((mesh := samples.mesh_of(make_shape("chair", 0), res)).faces) < faces:
        res += 8
    return normalize_mesh(mesh)


def sdf_speed(n: int = 50_000, repeats: int = 3) -> dict:
    """SDF samples per CPU-second through ``MeshShape.sdf`` on a ~50k-face mesh, best of
    ``repeats``: DeepSDF's mix (80% jittered surface points, 20% uniform) and uniform points."""
    import trimesh

    from gen3d_course.data.meshes import MeshShape

    mesh = chair_mesh()
    rng = np.random.default_rng(0)
    near, _ = trimesh.sample.sample_surface(mesh, int(0.8 * n), seed=0)
    near += rng.normal(size=near.shape) * np.where(np.arange(len(near)) % 2, 0.03, 0.005)[:, None]
    sets = {"deepsdf_mix": np.vstack([near, rng.uniform(-0.5, 0.5, (n - len(near), 3))]),
            "uniform": rng.uniform(-0.5, 0.5, (n, 3))}
    start = time.process_time()
    shape = MeshShape(mesh)
    result = {"faces": len(mesh.faces), "build_cpu_s": time.process_time() - start}
    for name, points in sets.items():
        times = []
        for _ in range(repeats):
            start = time.process_time()
            shape.sdf(points)
            times.append(time.process_time() - start)
        result[f"{name}_samples_per_cpu_s"] = len(points) / min(times)
    return result


def lecture_recipes() -> dict:
    """Lecture 08's fields and ``fit`` settings in lecture mode, by name: (make(bounds), settings)."""
    from gen3d_course.models import nerf

    return {
        "mlp": (lambda b: nerf.NeRF(width=64, depth=4, pos_freqs=6, dir_freqs=4, bounds=b),
                dict(steps=1200, batch_rays=1024, n_samples=32, lr=5e-3, lr_decay=0.1)),
        "grid": (lambda b: nerf.GridField(res=32, features=4, width=32, bounds=b),
                 dict(steps=2000, batch_rays=1024, n_samples=64, lr=1e-3, lr_decay=0.3, tv_weight=1e-3,
                      tv_block=16, upsample=((0.15, 64), (0.4, 96)))),
    }


def scale(factor: float = 3.0) -> dict:
    """Lecture 08's recipes on the procedural scene written as a Blender folder at unit scale and
    ``factor`` times larger (box ±1.5, read back from the json): held-out PSNR of each, and the
    training CPU-seconds."""
    import torch

    from gen3d_course import config
    from gen3d_course.data.nerf_formats import load_blender, save_blender
    from gen3d_course.data.scenes import scene_views
    from gen3d_course.models import nerf

    torch.set_num_threads(1)
    views = scene_views(n_train=40, n_test=6, size=64, seed=0)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in (1.0, factor):
            for split in ("train", "test"):
                save_blender(views[split].scaled(s), Path(tmp) / f"x{s:g}", split)
            train, test = (load_blender(Path(tmp) / f"x{s:g}", split) for split in ("train", "test"))
            for name, (make, settings) in lecture_recipes().items():
                config.seed_everything(0)
                fit = nerf.fit(make(train.bounds), train, test, progress=False, **settings)
                result[f"{name}_x{s:g}_psnr"] = fit.final_psnr
                result[f"{name}_x{s:g}_cpu_s"] = fit.cpu_seconds[-1]
    return result


def quality(n_train: int = 40) -> dict:
    """Held-out PSNR against training CPU-seconds of lecture 08's MLP and grid field on the
    lecture scene (``n_train`` views of 64², the lecture's 6 held-out views): (CPU s, dB) pairs."""
    import torch

    from gen3d_course import config
    from gen3d_course.data.scenes import scene_views
    from gen3d_course.models import nerf

    torch.set_num_threads(1)
    views = scene_views(n_train=n_train, n_test=6, size=64, seed=0)
    result = {}
    for name, (make, settings) in lecture_recipes().items():
        config.seed_everything(0)
        fit = nerf.fit(make(views["train"].bounds), views["train"], views["test"], progress=False,
                       eval_every=settings["steps"] // 9, **settings)
        result[f"{name}_cpu_s_psnr"] = [(round(s), round(p, 2)) for s, p in zip(fit.cpu_seconds, fit.psnrs)]
    return result


def main(which) -> None:
    for name in which:
        start = time.perf_counter()
        result = {"memory": memory, "sdf": sdf_speed, "scale": scale, "quality": quality}[name]()
        print(name, {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["memory", "sdf", "scale", "quality"])
