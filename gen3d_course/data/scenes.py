"""A procedural multi-view scene for novel view synthesis, and the container all view sets share.

The scene is a few coloured objects from the shape collection standing on a ground slab, inside
the world cube [-0.5, 0.5]³. Views are rendered by sphere tracing the union of their exact SDFs
with Lambertian shading, so every image comes with its intrinsics (one focal length, in pixels),
its camera-to-world pose (OpenGL convention, see ``render.cameras``), an exact alpha channel and
a ground-truth depth map. Nothing is downloaded.

Background, handled explicitly: images are stored as straight RGB + alpha; ``Views.images``
composites them onto ``Views.background`` (C = α·rgb + (1 − α)·background). A radiance field
trained on these images must render with the same background colour, and its accumulated
opacity can be compared with the true alpha.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import config
from ..render.cameras import focal_from_fov, pixel_rays, pose_from_angles
from ..render.sampling import ray_box
from ..render.sphere_tracing import render_rgba, sdf_gradient, shade
from .sdf import Box, Scaled, Union
from .shapes import make_shape


def _background_tensor(background) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(-1)
    if bg.numel() not in (1, 3) or not torch.isfinite(bg).all():
        raise ValueError(f"background must be one grey level or an RGB triple, got {background!r}.")
    return bg.expand(3).clone()


def as_bounds(bounds) -> tuple:
    """(lo, hi) as two floats with lo < hi: the cube [lo, hi]³ of a scene."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be (lo, hi), two numbers for the cube [lo, hi]³, got {bounds!r}.") from None
    if not lo < hi:
        raise ValueError(f"bounds (lo, hi) = {bounds!r} need lo < hi.")
    return lo, hi


class BoundsError(ValueError):
    """The scene's box does not hold what the images show (most foreground rays miss it)."""


@dataclass
class Views:
    """Posed images of one scene: what NeRF trains on, whatever file format it came from.

    ``rgba`` (N, H, W, 4) float32 in [0, 1], straight (not premultiplied) colour + alpha;
    ``poses`` (N, 4, 4) camera-to-world, OpenGL convention (camera looks down −z, y up);
    ``focal`` in pixels (same for x and y, principal point at the image centre);
    ``background`` the colour ``images`` are composited on; ``depth`` (N, H, W) ray distance
    where known (0 = background), else None; ``names`` one label per view (e.g. file names);
    ``bounds`` (lo, hi): the cube [lo, hi]³ that holds the scene, the one box every renderer,
    field and mesh extraction of this scene uses (the procedural scene: the world cube; Blender
    scenes: ±1.5, set by the loader).
    """

    rgba: torch.Tensor
    poses: torch.Tensor
    focal: float
    background: tuple = (1.0, 1.0, 1.0)
    depth: torch.Tensor | None = None
    names: list = field(default_factory=list)
    bounds: tuple = config.WORLD

    def __post_init__(self):
        self.rgba = torch.as_tensor(self.rgba, dtype=torch.float32)
        self.poses = torch.as_tensor(self.poses, dtype=torch.float32)
        if self.rgba.ndim != 4 or self.rgba.shape[-1] != 4:
            raise ValueError(f"Views: rgba has shape {tuple(self.rgba.shape)}; expected (N, H, W, 4).")
        if self.poses.shape != (len(self.rgba), 4, 4):
            raise ValueError(f"Views: poses have shape {tuple(self.poses.shape)}; expected "
                             f"({len(self.rgba)}, 4, 4), one camera-to-world matrix per image.")
        self.background = tuple(_background_tensor(self.background).tolist())
        self.focal = float(self.focal)
        self.bounds = as_bounds(self.bounds)
        if not self.names:
            self.names = [str(i) for i in range(len(self.rgba))]

    def __len__(self) -> int:
        return len(self.rgba)

    @property
    def height(self) -> int:
        return self.rgba.shape[1]

    @property
    def width(self) -> int:
        return self.rgba.shape[2]

    @property
    def alpha(self) -> torch.Tensor:
        return self.rgba[..., 3]

    @property
    def images(self) -> torch.Tensor:
        """(N, H, W, 3) colour composited on the background: α·rgb + (1 − α)·background."""
        return self.composite(self.background)

    def composite(self, background) -> torch.Tensor:
        """The images composited on another background colour."""
        alpha = self.rgba[..., 3:]
        return alpha * self.rgba[..., :3] + (1 - alpha) * _background_tensor(background)

    def with_background(self, background) -> "Views":
        return replace(self, background=tuple(_background_tensor(background).tolist()))

    def __getitem__(self, index) -> "Views":
        """A subset of the views (an int, slice, list of indices or boolean mask)."""
        if isinstance(index, int):
            index = [index]
        idx = torch.arange(len(self))[index]
        return replace(self, rgba=self.rgba[idx], poses=self.poses[idx],
                       depth=None if self.depth is None else self.depth[idx],
                       names=[self.names[i] for i in idx.tolist()])

    def rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions (N, H, W, 3) of every pixel's ray (``pixel_rays``)."""
        pairs = [pixel_rays(c2w, self.width, self.height, self.focal) for c2w in self.poses]
        return torch.stack([o for o, _ in pairs]), torch.stack([d for _, d in pairs])

    def scaled(self, factor: float) -> "Views":
        """The same images of the scene made ``factor`` times larger: camera positions, depths
        and the box scale, the images and focal length do not (a camera farther from a bigger
        object sees the same picture)."""
        poses = self.poses.clone()
        poses[:, :3, 3] *= factor
        return replace(self, poses=poses, depth=None if self.depth is None else self.depth * factor,
                       bounds=(self.bounds[0] * factor, self.bounds[1] * factor))

    def foreground_miss_fraction(self) -> float:
        """The fraction of foreground pixels (alpha > 0.5) whose rays miss the box ``bounds``.

        Every such ray passes through the object, so it must cross the box that holds it: a
        large fraction means the box is wrong (0 when the images carry no alpha, as tiny-NeRF's).
        """
        foreground = self.alpha > 0.5
        if bool((self.alpha > 0.999).all()) or not bool(foreground.any()):
            return 0.0
        missed = 0
        for c2w, mask in zip(self.poses, foreground):  # one view at a time: rays of 800² add up
            origins, directions = pixel_rays(c2w, self.width, self.height, self.focal)
            missed += int((~ray_box(origins[mask], directions[mask], self.bounds)[2]).sum())
        return missed / int(foreground.sum())

    def check_bounds(self, tolerance: float = 0.05) -> None:
        """Raise ``BoundsError`` when more than ``tolerance`` of the foreground rays miss the box."""
        missed = self.foreground_miss_fraction()
        if missed > tolerance:
            lo, hi = self.bounds
            raise BoundsError(
                f"{missed:.0%} of the rays through the object (alpha > 0.5) miss the box "
                f"[{lo:g}, {hi:g}]³, so nothing can be rendered there: the scene is larger than its "
                "bounds. Give the views the scene's box (Blender scenes: load_blender(..., "
                "bounds=(-1.5, 1.5)), or views = dataclasses.replace(views, bounds=...)), and build "
                "the field with bounds=views.bounds.")


# name, shape seed, colour, (x, z) position on the ground, longest side.
DEFAULT_OBJECTS = (
    ("chair", 3, (0.85, 0.25, 0.2), (-0.2, -0.12), 0.42),
    ("mug", 1, (0.2, 0.45, 0.85), (0.2, -0.15), 0.3),
    ("lamp", 2, (0.95, 0.75, 0.15), (0.08, 0.22), 0.45),
)
GROUND_COLOR = (0.55, 0.62, 0.52)
GROUND_TOP = -0.3


class Scene:
    """A few shapes on a ground slab; ``sdf`` is their union, ``albedo`` the nearest one's colour.

    Each object is a collection shape uniformly scaled to ``size`` and moved so that its box
    stands on the ground (y = ``GROUND_TOP``) at its (x, z) position.
    """

    def __init__(self, objects=DEFAULT_OBJECTS, ground: bool = True, ground_color=GROUND_COLOR):
        self.parts, self.colors, self.names = [], [], []
        for category, seed, color, (x, z), size in objects:
            solid = make_shape(category, seed).solid  # already fitted to longest side 0.9
            lo, _ = solid.bounds()
            scale = size / 0.9
            offset = np.array([x, GROUND_TOP - scale * lo[1] - 0.005, z])
            self.parts.append(Scaled(solid, scale, offset))
            self.colors.append(color)
            self.names.append(category)
        if ground:
            self.parts.append(Box([0.0, GROUND_TOP - 0.04, 0.0], [0.46, 0.04, 0.46], rounding=0.01))
            self.colors.append(ground_color)
            self.names.append("ground")
        self.solid = Union(*self.parts)
        lo, hi = self.solid.bounds()
        if (lo < -0.5).any() or (hi > 0.5).any():
            raise ValueError(f"Scene: the objects reach outside the world cube (box {lo} .. {hi}).")
        self._colors = np.asarray(self.colors, float)
        # Cheap, large parts first (the ground), so that the culling in ``sdf`` bites early.
        self._cull_order = self.parts[::-1]
        self._boxes = [tuple(np.asarray(b, float) for b in p.bounds()) for p in self._cull_order]

    def sdf(self, points) -> np.ndarray:
        """Signed distance of the whole scene at (N, 3) points: min over the parts.

        Exact and faster than ``self.solid``: a part is evaluated only at points whose distance
        to the part's bounding box (a lower bound of the distance to the part) is below the
        best distance found so far — far from an object, its many primitives are skipped.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"Scene.sdf: points have shape {points.shape}; expected (N, 3).")
        best = np.full(len(points), np.inf)
        for part, (lo, hi) in zip(self._cull_order, self._boxes):
            outside = np.linalg.norm(np.maximum(np.maximum(lo - points, points - hi), 0.0), axis=1)
            idx = np.flatnonzero(outside < best)
            if idx.size:
                best[idx] = np.minimum(best[idx], part.distance(points[idx]))
        return best

    def part_distances(self, points) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return np.stack([p.distance(points) for p in self.parts], axis=1)

    def albedo(self, points) -> np.ndarray:
        """(N, 3) colour of the object nearest to each point."""
        return self._colors[np.argmin(self.part_distances(points), axis=1)]

    def density(self, points, sharpness: float = 0.005, peak: float = 400.0) -> np.ndarray:
        """A density field whose volume rendering looks like the surface render:
        σ(x) = peak · sigmoid(−sdf(x) / sharpness) — large inside, ~0 outside, a soft step of
        width ≈ ``sharpness`` at the surface (the idea behind VolSDF / NeuS)."""
        return peak / (1.0 + np.exp(np.clip(self.sdf(points) / sharpness, -50, 50)))

    def radiance(self, points, directions, **shading) -> np.ndarray:
        """Colour c(x, d) of the render's shading at any point, with the normal ∇sdf/|∇sdf|
        taken there (so it is defined off the surface too). (N, 3) in [0, 1]."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        g = sdf_gradient(self, points)
        normals = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        return shade(self.albedo(points), normals, np.asarray(directions, float).reshape(-1, 3), **shading)

    def radiance_field(self, sharpness: float = 0.005, **shading):
        """The scene as a radiance field ``(points (N, 3), directions (N, 3)) → (σ (N,), rgb (N, 3))``
        for ``render.rays``: what a perfectly trained NeRF would hold.

        Colours are computed only where σ ≥ 0.01: elsewhere a sample's α = 1 − exp(−σδ) is below
        0.01·δ and cannot change a pixel visibly, and the empty space is skipped.
        """
        def field(points: torch.Tensor, directions: torch.Tensor):
            p = points.detach().double().cpu().numpy()
            sigma = self.density(p, sharpness)
            rgb = np.zeros((len(p), 3))
            used = np.flatnonzero(sigma >= 0.01)
            if used.size:
                rgb[used] = self.radiance(p[used], directions.detach().double().cpu().numpy()[used], **shading)
            return (torch.from_numpy(sigma).to(points), torch.from_numpy(rgb).to(points))

        return field

    def render(self, c2w, width: int = 64, height: int | None = None, focal: float | None = None,
               **shading) -> dict[str, np.ndarray]:
        """One view: ``rgb``, ``alpha``, ``depth``, ``normal`` (see ``render_rgba``)."""
        height = width if height is None else height
        focal = focal_from_fov(width, DEFAULT_FOV) if focal is None else focal
        return render_rgba(self, self.albedo, c2w, width, height, focal, **shading)


DEFAULT_FOV = 40.0
DEFAULT_RADIUS = 1.5
LOOK_AT = (0.0, -0.1, 0.0)  # the middle of the objects, slightly below the world centre


def camera_poses(n: int, seed: int = 0, radius: float = DEFAULT_RADIUS,
                 elevation_range=(15.0, 55.0), azimuth_offset: float | None = None) -> torch.Tensor:
    """(n, 4, 4) cameras on the upper sphere of ``radius`` around ``LOOK_AT``, looking at it.

    With ``azimuth_offset`` None the azimuths and elevations are random (seeded); otherwise the
    azimuths are evenly spaced from the offset and elevations cycle through the range, which
    gives a held-out set that covers all sides of the scene.
    """
    rng = np.random.default_rng(seed)
    lo, hi = elevation_range
    if azimuth_offset is None:
        azimuth = rng.uniform(0.0, 360.0, n)
        elevation = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(lo)), np.sin(np.radians(hi)), n)))
    else:
        azimuth = azimuth_offset + np.arange(n) * 360.0 / n
        elevation = np.linspace(lo, hi, 3)[np.arange(n) % 3] if n > 1 else np.full(1, (lo + hi) / 2)
    return torch.stack([pose_from_angles(a, e, radius, LOOK_AT) for a, e in zip(azimuth, elevation)])


def render_scene_views(scene: Scene, poses, size: int = 64, fov_deg: float = DEFAULT_FOV,
                 background=(1.0, 1.0, 1.0), **shading) -> Views:
    """Render ``scene`` from every pose into a ``Views`` set (with ground-truth depth)."""
    focal = focal_from_fov(size, fov_deg)
    renders = [scene.render(c2w, size, size, focal, **shading) for c2w in poses]
    rgba = np.stack([np.concatenate([r["rgb"], r["alpha"][..., None]], axis=-1) for r in renders])
    depth = np.stack([r["depth"] for r in renders])
    return Views(torch.from_numpy(rgba), torch.as_tensor(poses), focal, background,
                 depth=torch.from_numpy(depth))


def scene_views(n_train: int = 40, n_test: int = 8, size: int = 64, seed: int = 0,
                fov_deg: float = DEFAULT_FOV, radius: float = DEFAULT_RADIUS,
                background=(1.0, 1.0, 1.0), scene: Scene | None = None,
                **shading) -> dict[str, Views]:
    """The procedural scene's train / held-out split: {"train": Views, "test": Views}.

    Training cameras are random on the upper sphere; held-out cameras are evenly spaced in
    azimuth, at angles none of the training cameras sits at exactly.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"scene_views: need at least one view per split, got {n_train}, {n_test}.")
    scene = Scene() if scene is None else scene
    train = camera_poses(n_train, seed=seed, radius=radius)
    test = camera_poses(n_test, seed=seed + 1, radius=radius, azimuth_offset=17.0 + 7.0 * seed)
    return {
        "train": render_scene_views(scene, train, size, fov_deg, background, **shading),
        "test": render_scene_views(scene, test, size, fov_deg, background, **shading),
    }
