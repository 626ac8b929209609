"""The course's experiments with score distillation (unit 12): the two 2D priors (view-agnostic
and view-conditioned U-Net diffusion models on the course's own chair renders), the view-direction
classifier that turns the Janus problem into a number, SDS runs of unit 08's grid field, and the
shipped checkpoints' recipe. The method is in ``models.score_distillation``.

Three checkpoint files come from one ``gen3d-course train score_distillation`` (as unit 11 ships
its latents beside its model): ``sds_prior_agnostic`` and ``sds_prior_view`` (the two priors,
trained side by side in two threads of one process, one core each) and ``sds_view_classifier``.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from ..checkpoints import checkpoint_info, load_checkpoint, rounded, save_checkpoint
from ..data.graf_images import graf_images
from ..models.diffusion import DiffusionModel, UNet, cosine_schedule, fit
from ..models.nerf import GridField
from ..models.score_distillation import FOV, distill, prompt_condition, prompt_score
from ..render.cameras import focal_from_fov, pose_from_angles
from ..render.rays import render_image
from ..train import train

CHECKPOINT = "sds_prior_view"          # the module's main checkpoint; the others are named below
PRIORS = {"agnostic": "sds_prior_agnostic", "view": CHECKPOINT}
CLASSIFIER = "sds_view_classifier"
CATEGORY = "chair"   # a chair's back hides its seat, its front shows it: front and back differ
SIZE = 32
TRAIN_SEED, HELDOUT_SEED = 0, 1   # graf_images seeds: shapes seed·100000 + i, colours and cameras
SIDE_MARGIN = 15.0   # views within this many degrees of side-on (azimuth ±90°) are neither front nor back

# --------------------------------------------------------------------------------------------
# Data: renders of one category from all around, with their colour and camera
# --------------------------------------------------------------------------------------------


def renders(n: int, seed: int = TRAIN_SEED):
    """``data.graf_images`` of ``n`` chairs at 32², cameras all around (azimuth 0–360°,
    elevation 10–40°, radius 1.8), one random colour each."""
    return graf_images(n, SIZE, CATEGORY, seed=seed)


def conditions(collection, view: bool) -> torch.Tensor:
    """The prompts of a collection's images: colour, and camera angles for the view prior."""
    return prompt_condition(collection.colors, collection.angles if view else None)


def prior_model(view: bool, channels: int = 32, T: int = 1000) -> DiffusionModel:
    """A U-Net ε-predictor on 32² RGB in [0, 1] (standardised to [−1, 1]), conditioned on the
    colour (3) or on colour and camera (6); the null prompt ∅ makes it unconditional too."""
    return DiffusionModel(UNet(SIZE, channels, cond_dim=6 if view else 3), cosine_schedule(T), 0.5, 0.5)


# --------------------------------------------------------------------------------------------
# The view-direction classifier: front or back?
# --------------------------------------------------------------------------------------------

def facing(angles: torch.Tensor) -> torch.Tensor:
    """1 where the camera sees the chair's front (it faces +z, azimuth 0), 0 its back, −1 side-on
    (within ``SIDE_MARGIN`` of ±90°). A chair is its own mirror image left to right, so azimuths
    φ and −φ look alike: front/back is what a picture can tell, the side it cannot."""
    phi = torch.as_tensor(angles, dtype=torch.float32).reshape(-1, 2)[:, 0]
    c = torch.cos(torch.deg2rad(phi))
    side = c.abs() < np.sin(np.radians(SIDE_MARGIN))
    return torch.where(side, torch.full_like(c, -1), (c > 0).float()).long()


class ViewClassifier(nn.Module):
    """A small CNN: 32² RGB → two logits, (back, front), the order of ``facing``'s labels 0 and 1."""

    def __init__(self, channels: int = 16):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),          # 16²
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),      # 8²
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),  # 4²
            nn.Flatten(), nn.Linear(16 * 4 * c, 64), nn.SiLU(), nn.Linear(64, 2))
        self.channels = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (3, SIZE, SIZE):
            raise ValueError(f"ViewClassifier: images {tuple(images.shape)} must be (B, 3, {SIZE}, {SIZE}).")
        return self.net(images * 2 - 1)

    @torch.no_grad()
    def front_probability(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(images), 1)[:, 1]


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random blur (SDS renders are softer than sphere-traced ones) and a shift of up to 2 pixels."""
    blur = torch.rand(len(images), 1, 1, 1, generator=generator)
    soft = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    images = blur * soft + (1 - blur) * images
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(images, (dy, dx), (2, 3))


def train_classifier(collection, steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0,
                     progress: bool = True):
    """Fit a ``ViewClassifier`` to the front/back labels of a collection's non-side views."""
    labels = facing(collection.angles)
    keep = labels >= 0
    images, labels = collection.images[keep], labels[keep]
    torch.manual_seed(seed)
    model = ViewClassifier()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(i):
        idx = torch.randint(len(images), (batch,), generator=generator)
        loss = F.cross_entropy(model(augment(images[idx], generator)), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    history = train(step, steps, desc="view classifier", log_every=10, progress=progress)
    return model.eval(), history


def facing_accuracy(classifier: ViewClassifier, images: torch.Tensor, angles: torch.Tensor) -> float:
    """Share of non-side views whose predicted front/back matches the camera's."""
    labels = facing(angles)
    keep = labels >= 0
    predicted = (classifier.front_probability(images[keep]) > 0.5).long()
    return float((predicted == labels[keep]).float().mean())


def janus_number(classifier: ViewClassifier, images: torch.Tensor, angles: torch.Tensor) -> float:
    """The Janus number of an object from renders all around it: the share of its non-side views
    that the classifier reads as the wrong side (1 − ``facing_accuracy``). A real chair scores
    the classifier's error rate; a chair that shows its front from everywhere about one half."""
    return 1 - facing_accuracy(classifier, images, angles)


# --------------------------------------------------------------------------------------------
# The shipped checkpoints
# --------------------------------------------------------------------------------------------

def load_prior(kind: str, device=None) -> DiffusionModel:
    """The shipped prior ``kind`` ("agnostic" or "view") in eval mode."""
    if kind not in PRIORS:
        raise ValueError(f"load_prior: kind {kind!r} must be one of {sorted(PRIORS)}.")
    cfg = checkpoint_info(PRIORS[kind])["config"]
    model = DiffusionModel(UNet(**cfg["denoiser"]), cosine_schedule(cfg["T"]), 0.5, 0.5)
    return load_checkpoint(PRIORS[kind], model, device=device).eval()


def load_pretrained(device=None) -> DiffusionModel:
    """The shipped view-conditioned prior (``load_prior("agnostic")`` gives the other one)."""
    return load_prior("view", device)


def load_classifier(device=None) -> ViewClassifier:
    cfg = checkpoint_info(CLASSIFIER)["config"]
    return load_checkpoint(CLASSIFIER, ViewClassifier(cfg["channels"]), device=device).eval()


@torch.no_grad()
def prior_samples(prior: DiffusionModel, view: bool, colors: torch.Tensor, angles: torch.Tensor,
                  guidance: float = 3.0, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """DDIM samples (n, 3, 32, 32) in [0, 1] for the prompts (colour, and camera for the view prior)."""
    cond = prompt_condition(colors, angles if view else None)
    return prior.sample(len(cond), steps=steps, labels=cond, guidance=guidance, seed=seed).clamp(0, 1)


def object_color(images: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    """(n, 3) mean colour of the pixels that are not background white (distance > 0.15)."""
    mask = ((images - background).abs().amax(1, keepdim=True) > 0.15).float()
    return (images * mask).sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)


def prior_metrics(prior: DiffusionModel, view: bool, classifier: ViewClassifier, held, guidance: float = 3.0,
                  seed: int = 0, steps: int = 50) -> dict:
    """Sample quality of a prior on the held-out prompts ``held`` (a collection's colours and cameras):

    - ``facing_accuracy``: the classifier's front/back agreement with the *asked* camera (the view
      prior should score near the real renders' accuracy, the agnostic one near one half);
    - ``front_share``: share of non-side samples the classifier calls front (real data: ≈ 0.5);
    - ``color_error``: mean absolute difference between the asked colour and the samples' object
      pixels' mean, against the same measure on the real renders (shading darkens every colour).
    """
    samples = prior_samples(prior, view, held.colors, held.angles, guidance, steps, seed)
    keep = facing(held.angles) >= 0
    real_color = (object_color(held.images) - held.colors).abs().mean()
    return {"facing_accuracy": facing_accuracy(classifier, samples, held.angles),
            "front_share": float((classifier.front_probability(samples[keep]) > 0.5).float().mean()),
            "color_error": float((object_color(samples) - held.colors).abs().mean()),
            "color_error_real": float(real_color), "guidance": guidance, "samples": len(samples)}


def train_checkpoint() -> dict:
    """Train and measure the shipped priors and classifier (``gen3d-course train score_distillation``).

    Full mode: 2,000 training renders; the classifier first (1,000 steps); then both priors at
    once, one per thread (one core each), Adam with batch 32 for 6,000 steps (about 35 minutes
    on two free cores; a step count, not a clock, so the run is the same on any machine). The
    manifests record each prior's ``prior_metrics`` on 200 held-out prompts and the classifier's
    accuracy on the held-out renders.
    """
    torch.set_num_threads(1)
    seed = 0
    config.seed_everything(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    n_train = config.budget(lecture=600, fast=64, full=2000)
    n_held = config.budget(lecture=100, fast=32, full=200)
    steps = config.budget(lecture=400, fast=20, full=6000)
    max_seconds = config.budget(lecture=150, fast=None, full=4 * 3600)  # full: the steps end first
    data, held = renders(n_train, TRAIN_SEED), renders(n_held, HELDOUT_SEED)
    data_seconds = time.perf_counter() - start
    print(f"score_distillation: {n_train} + {n_held} renders in {data_seconds:.0f} s", flush=True)
    classifier, c_history = train_classifier(data, config.budget(lecture=500, fast=50, full=1000), seed=seed)
    c_accuracy = facing_accuracy(classifier, held.images, held.angles)
    print(f"score_distillation: classifier held-out accuracy {c_accuracy:.3f}", flush=True)

    priors, histories = {}, {}
    for kind in PRIORS:
        torch.manual_seed(seed)
        priors[kind] = prior_model(kind == "view")

    def run(kind):
        histories[kind] = fit(priors[kind], data.images, steps, labels=conditions(data, kind == "view"),
                              p_uncond=0.1, batch=32, lr=1e-3, seed=seed, desc=f"{kind} prior", progress=False,
                              max_seconds=max_seconds)

    threads = [threading.Thread(target=run, args=(kind,)) for kind in PRIORS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if set(histories) != set(PRIORS):
        raise RuntimeError("score_distillation: a prior's training thread failed (see its traceback above).")
    command = f"GEN3D_MODE={config.mode()} gen3d-course train score_distillation"
    data_config = {"category": CATEGORY, "size": SIZE, "renders": n_train, "seed": TRAIN_SEED,
                   "held_out": {"renders": n_held, "seed": HELDOUT_SEED}}
    metrics = {"classifier": {"heldout_accuracy": c_accuracy, "final_loss": c_history.mean("loss")}}
    save_checkpoint(CLASSIFIER, classifier, command=command, seed=seed, metrics=rounded(metrics["classifier"]),
                    config={"channels": classifier.channels, "data": data_config, "side_margin_deg": SIDE_MARGIN})
    for kind, prior in priors.items():
        m = prior_metrics(prior, kind == "view", classifier, held, seed=1)
        m["train"] = {"steps": histories[kind].steps[-1] + 1, "max_steps": steps, "max_seconds": max_seconds,
                      "final_loss": histories[kind].mean("loss"),
                      "first_loss": histories[kind].mean("loss", first=True),
                      "train_seconds": histories[kind].seconds}
        metrics[kind] = m
        print(f"score_distillation: {kind} prior {rounded(m)}", flush=True)
        save_checkpoint(PRIORS[kind], prior, command=command, seed=seed, metrics=rounded(m),
                        config={"denoiser": prior.denoiser.config(), "T": prior.schedule.T, "schedule": "cosine",
                                "p_uncond": 0.1, "lr": 1e-3, "batch": 32, "data": data_config,
                                "prompt": "colour" + (" + camera (sin, cos azimuth, elevation rad)"
                                                      if kind == "view" else "")})
    metrics["wall_seconds"] = time.perf_counter() - start
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return rounded(metrics)


# --------------------------------------------------------------------------------------------
# SDS runs of unit 08's grid field, and their Janus number
# --------------------------------------------------------------------------------------------

RADIUS = 1.8  # the renders' camera distance (``render.patches.PoseDistribution``)
PROMPT = (0.85, 0.25, 0.2)   # "a red chair": a colour inside the training colours' range


MESH_LEVEL = 30.0  # σ of the SDS fields' meshes: their dense cores reach 40-80 in 400 steps (our runs)


def sds_field(res: int = 32, seed: int = 0, blob: float = 0.3) -> GridField:
    """A ``models.nerf.GridField`` over the world cube with a soft ball of density at the centre
    (raw density ``blob``·(1 − r/0.35) inside radius 0.35), as DreamFusion starts: from an empty
    field every render is white and the first gradients have nowhere to put density."""
    with torch.random.fork_rng(devices=[]):  # the colour head is drawn from torch's global RNG:
        torch.manual_seed(seed)                 # seed it too, so one seed is one start anywhere
        field = GridField(res=res, features=4, width=32, seed=seed)
    with torch.no_grad():
        axis = torch.linspace(*config.WORLD, res)
        x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
        r = (x ** 2 + y ** 2 + z ** 2).sqrt()
        field.density_grid.copy_(blob * (1 - r / 0.35).clamp(min=0))
    return field


def run_sds(prior: DiffusionModel, view_conditioned: bool, steps: int, seed: int = 0, color=PROMPT,
            res: int = 32, **kw):
    """One SDS run from ``sds_field(res, seed)``: returns (field, history). ``kw`` go to
    ``models.score_distillation.distill`` (guidance, lr, views, t_range, max_seconds, ...)."""
    torch.manual_seed(seed)
    field = sds_field(res, seed)
    history = distill(field, prior, color, steps, view_conditioned=view_conditioned, seed=seed,
                      desc=f"SDS {'view' if view_conditioned else 'agnostic'} seed {seed}", **kw)
    return field, history


def ring_angles(n: int = 12, elevation: float = 25.0) -> torch.Tensor:
    """(n, 2) cameras evenly around the object at one elevation, starting at the front (azimuth 0)."""
    return torch.stack([torch.arange(n) * 360.0 / n, torch.full((n,), float(elevation))], 1)


@torch.no_grad()
def ring_renders(field, angles: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(n, 3, size, size) renders of ``field`` from ``angles`` with the priors' camera (radius, fov)."""
    focal = focal_from_fov(size, FOV)
    return torch.stack([render_image(field, pose_from_angles(float(a), float(e), RADIUS), size, size, focal,
                                     n_samples=64)["rgb"].permute(2, 0, 1) for a, e in angles]).clamp(0, 1)


def janus_row(field, prior: DiffusionModel, view_conditioned: bool, classifier: ViewClassifier, seed: int,
              seconds: float, n_views: int = 16) -> dict:
    """One SDS object measured from ``n_views`` ring cameras: its Janus number, the share of its
    non-side views read as "front", the prompt score (``prompt_score``) of the renders under the
    prior that made it, with the run's seed and seconds and the field itself under "field"."""
    angles = ring_angles(n_views)
    images = ring_renders(field, angles)
    keep = facing(angles) >= 0
    return {"prior": "view-conditioned" if view_conditioned else "view-agnostic", "seed": seed,
            "Janus": janus_number(classifier, images, angles),
            "front share": float((classifier.front_probability(images[keep]) > 0.5).float().mean()),
            "prompt score": prompt_score(prior, images, ring_prompt(angles, view_conditioned)),
            "seconds": seconds, "field": field}


def ring_prompt(angles: torch.Tensor, view_conditioned: bool, color=PROMPT) -> torch.Tensor:
    """The SDS prompt for each of ``angles``' cameras: the colour, and the camera for a view prior."""
    colors = torch.as_tensor(color, dtype=torch.float32).reshape(1, 3).expand(len(angles), 3)
    return prompt_condition(colors, angles if view_conditioned else None)


def janus_runs(prior: DiffusionModel, view_conditioned: bool, classifier: ViewClassifier, seeds, steps: int,
               **kw) -> list[dict]:
    """``run_sds`` for each seed (``kw`` go to ``distill``), each measured by ``janus_row``."""
    rows = []
    for seed in seeds:
        field, history = run_sds(prior, view_conditioned, steps, seed, **kw)
        rows.append(janus_row(field, prior, view_conditioned, classifier, seed, history.seconds))
    return rows
