"""Both forms of every slider panel, built through ``viz.panels`` from the same callable:

- live: latency of one slider move (decode or re-mesh + in-place widget update), median and max;
- static: time to build the plotly Figure (every frame decoded and encoded) and its size in bytes.

Usage: python benchmarks/sliders.py [WORD ...]   (one Markdown table; WORDs pick the panels whose
name contains one of them, e.g. ``gallery NeRF``)
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics
import time

import numpy as np


def measure(moves) -> tuple[list[float], list[float]]:
    """Set each (control, value) in turn on a live panel; (wall, CPU) seconds of each full redraw.
    CPU seconds (one thread) stay meaningful on a machine that is busy with something else."""
    wall, cpu = [], []
    for control, value in moves:
        start, start_cpu = time.perf_counter(), time.process_time()
        control.value = value
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


# Each panel returns (build, moves): build() makes the panel in the current form through
# viz.panels; moves(live_box) lists the (control, value) changes timed in the live form.

def gallery():
    from gen3d_course.data import samples
    from gen3d_course.data.shapes import CATEGORIES, make_shape
    from gen3d_course.viz import panels

    def build():
        return panels.mesh_browser(lambda category, seed: samples.mesh_of(make_shape(category, seed), 64),
                                   category=list(CATEGORIES), seed=(0, 50, 1))
    return build, lambda box: [(box.controls["seed"], v) for v in range(1, 11)]


def deepsdf_interpolation():
    """Unit 05: shipped DeepSDF decoder, chair → table codes, narrow-band 64³ grid + marching cubes."""
    from gen3d_course.experiments import deepsdf as experiments
    from gen3d_course.models import deepsdf
    from gen3d_course.viz import panels

    model, shapes = experiments.load_pretrained(), experiments.shipped_training_shapes()
    categories = [s.category for s in shapes]
    codes = model.codes.weight.detach()

    def build():
        return panels.interpolation_slider(deepsdf.mesh_decoder(model.decoder, res=64),
                                           codes[categories.index("chair")],
                                           codes[categories.index("table")], steps=11)
    return build, lambda box: [(box.slider, i / 10) for i in range(1, 11)]


def _small_vae(data, steps, **fit_kwargs):
    """A VAE trained briefly (benchmark setup): decode latency does not depend on training, but
    marching cubes does (an untrained decoder's 0.5-level is noise), so the shape model learns."""
    import torch

    from gen3d_course.models import autoencoders as ae

    torch.manual_seed(0)
    model = ae.VAE(tuple(data.shape[1:]), 8, hidden=(128,))
    ae.fit(model, data, steps, progress=False, **fit_kwargs)
    return model


def _two_sliders(box):
    return list(zip(box.sliders[:2] * 5, [-2.0, -1.0, 0.0, 1.0, 2.0] * 2))


def vae_image_sliders():
    """Unit 01: 8-D image VAE, 32×32 decode into a PNG image."""
    import torch

    from gen3d_course.models import autoencoders as ae
    from gen3d_course.viz import panels

    model = _small_vae(torch.rand(64, 1, 32, 32), 1)
    return lambda: panels.latent_sliders(lambda z: ae.decode_numpy(model, z)[0], 8), _two_sliders


def vae_voxel_sliders():
    """Unit 01: 8-D voxel VAE, 16³ decode + marching cubes (2× upsampled) into a MeshPanel."""
    import numpy as np
    import torch

    from gen3d_course.data import samples
    from gen3d_course.data.shapes import shape_collection
    from gen3d_course.geometry.extract import voxel_mesh
    from gen3d_course.models import autoencoders as ae
    from gen3d_course.viz import panels

    voxels = torch.from_numpy(np.stack([samples.voxelize(s, 16) for s in shape_collection(10)]))
    model = _small_vae(voxels.float()[:, None], 300, C=2.0, batch_size=32, lr=3e-3)
    return (lambda: panels.latent_sliders(lambda z: voxel_mesh(ae.decode_numpy(model, z)[0], upsample=2), 8),
            _two_sliders)


def voxel_gan_sliders():
    """Unit 04: shipped 3D-VAE-GAN generator, z (64-d) -> 32³ grid + marching cubes."""
    import torch

    from gen3d_course.experiments import voxel_gan as experiments
    from gen3d_course.models import voxel_gan as vg
    from gen3d_course.viz import panels

    model = experiments.load_pretrained()
    z0 = torch.randn(1, model.cfg.z_dim, generator=torch.Generator().manual_seed(1))[0].numpy()
    return (lambda: panels.latent_sliders(
        lambda z: experiments.voxel_mesh(vg.generate(model.G, torch.from_numpy(z)[None])[0]),
        model.cfg.z_dim, n_sliders=6, z0=z0), _two_sliders)


def _orbit_moves(box):
    return list(zip([box.controls["azimuth"]] * 5 + [box.controls["elevation"]] * 5,
                    [45.0, 60.0, 75.0, 90.0, 105.0, 20.0, 25.0, 35.0, 40.0, 45.0]))


def nerf_orbit():
    """Unit 08: shipped NeRF, one 64×64 orbit view (colour + depth, 32 + 16 samples) per move."""
    from gen3d_course.experiments import nerf as experiments
    from gen3d_course.viz import panels

    field = experiments.load_pretrained()
    render = experiments.orbit_renderer(field, size=64, **experiments.ORBIT_RENDER)
    return (lambda: panels.image_sliders(render, azimuth=(0.0, 360.0, 15.0, 30.0),
                                         elevation=(10.0, 70.0, 5.0, 30.0)),
            _orbit_moves)


def nerf_orbit_every_sample():
    """Unit 08: ``nerf_orbit`` without the occupancy grid and early termination (what it was)."""
    from gen3d_course.experiments import nerf as experiments
    from gen3d_course.viz import panels

    render = experiments.orbit_renderer(experiments.load_pretrained(), size=64, skip_empty=False,
                                        **experiments.ORBIT_RENDER)
    return (lambda: panels.image_sliders(render, azimuth=(0.0, 360.0, 15.0, 30.0),
                                         elevation=(10.0, 70.0, 5.0, 30.0)), _orbit_moves)


def graf_sliders():
    """Unit 09: shipped GRAF generator, one 64×64 volume render (16 samples per ray) per move."""
    from gen3d_course.experiments import graf as experiments
    from gen3d_course.viz import panels

    G = experiments.load_pretrained()
    render = experiments.image_renderer(G, size=64)
    return (lambda: panels.image_sliders(render, azimuth=(0.0, 360.0, 10.0, 30.0),
                                         elevation=(0.0, 60.0, 5.0, 25.0), zs0=(-2.5, 2.5, 0.1, 0.0),
                                         za0=(-2.5, 2.5, 0.1, 0.0)),
            lambda box: list(zip([box.controls["azimuth"]] * 4 + [box.controls["zs0"]] * 3
                                 + [box.controls["za0"]] * 3,
                                 [60.0, 90.0, 120.0, 150.0, -1.0, 0.5, 2.0, -1.0, 0.5, 2.0])))


PANELS = {"00 gallery (64³ re-mesh)": gallery,
          "05 DeepSDF interpolation (64³ narrow band)": deepsdf_interpolation,
          "01 image VAE sliders (32×32 decode)": vae_image_sliders,
          "01 voxel VAE sliders (16³ decode + marching cubes)": vae_voxel_sliders,
          "04 3D-GAN sliders (32³ generator + marching cubes)": voxel_gan_sliders,
          "08 NeRF orbit (64×64 view + depth, 32 + 16 samples)": nerf_orbit,
          "08 NeRF orbit, every sample queried (before empty-space skipping)": nerf_orbit_every_sample,
          "09 GRAF sliders (64×64 volume render, 16 samples)": graf_sliders}


def main(words=()) -> None:
    import torch

    from gen3d_course.viz import panels

    torch.set_num_threads(1)  # as the notebooks do: parallel kernels lose on small decoders
    print("| panel | live: median ms a move | live: max ms | live: median CPU ms | static: build s "
          "| static: bytes |\n|---|---:|---:|---:|---:|---:|")
    for name, panel in PANELS.items():
        if words and not any(w.lower() in name.lower() for w in words):
            continue
        build, moves = panel()
        os.environ[panels.VIEWS_VARIABLE] = "live"
        times, cpu = (np.array(t) * 1e3 for t in measure(moves(build())))
        os.environ[panels.VIEWS_VARIABLE] = "static"
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its own one-line summary
            figure = build()
        seconds = time.perf_counter() - start
        size = len(figure.to_json())
        assert size <= panels.MAX_BYTES, f"{name}: static figure of {size} bytes"
        print(f"| {name} | {statistics.median(times):.0f} | {times.max():.0f} | {statistics.median(cpu):.0f} "
              f"| {seconds:.1f} | {size:,} |")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
