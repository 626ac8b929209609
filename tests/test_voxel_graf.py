"""PlatonicGAN-style voxel generator (unit 09): the grid decoder, trilinear reading, the GRAF plumbing."""
import pytest
import torch

from gen3d_course.experiments import graf as experiments
from gen3d_course.models import graf, voxel_graf

torch.set_num_threads(1)


def test_voxel_field_shapes_view_independence_and_gradients():
    field = voxel_graf.VoxelField(z_shape=4, z_app=3, res=8, base=8)
    gen = torch.Generator().manual_seed(0)
    z_s, z_a = torch.randn(2, 4, generator=gen), torch.randn(2, 3, generator=gen)
    x = torch.rand(2, 50, 3, generator=gen) - 0.5
    d1 = torch.nn.functional.normalize(torch.randn(2, 50, 3, generator=gen), dim=-1)
    sigma, rgb = field(x, d1, z_s, z_a)
    assert sigma.shape == (2, 50) and rgb.shape == (2, 50, 3) and (sigma >= 0).all()
    assert field.grid(z_s, z_a).shape == (2, 4, 8, 8, 8)
    _, rgb2 = field(x, -d1, z_s, z_a)
    assert torch.equal(rgb, rgb2)  # colour is a property of the voxel, not of the view
    (sigma.sum() + rgb.sum()).backward()
    assert all(p.grad is not None for p in field.parameters())


def test_voxel_field_reads_its_grid_at_the_nodes():
    field = voxel_graf.VoxelField(z_shape=2, z_app=2, res=8, base=8, density_scale=1.0, density_shift=0.0)
    z = torch.zeros(1, 2)
    grid = field.grid(z, z)[0]  # (4, R, R, R) indexed [c, iz, iy, ix] by grid_sample
    node = torch.tensor([[[-0.5, -0.5 + 3 / 7, 0.5]]])  # x = lo, y = node 3, z = hi
    sigma, rgb = field(node, node, z, z)
    expected = grid[:, 7, 3, 0]
    assert torch.allclose(rgb[0, 0], torch.sigmoid(expected[1:]), atol=1e-5)
    assert torch.allclose(sigma[0, 0], torch.nn.functional.softplus(expected[0]), atol=1e-5)


def test_voxel_field_rejects_bad_sizes():
    with pytest.raises(ValueError, match="4·2\\^k"):
        voxel_graf.VoxelField(res=12)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        voxel_graf.VoxelField(res=8, base=8)(torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(1, 16), torch.zeros(1, 8))


def test_voxel_generator_trains_with_grafs_loop():
    cfg = graf.GRAFConfig()
    model = voxel_graf.create(cfg, res=8, base=8)
    assert isinstance(model.G.field, voxel_graf.VoxelField) and isinstance(model.G_ema.field, voxel_graf.VoxelField)
    images = torch.rand(6, 3, cfg.image_size, cfg.image_size)
    before = [p.detach().clone() for p in model.G.parameters()]
    history = graf.fit(model, images, 2, progress=False)
    assert len(history["g_loss"]) == 2 and model.steps_done == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.G.parameters()))
    out = model.G_ema.sample(2, seed=0)
    assert out["images"].shape == (2, 3, cfg.image_size, cfg.image_size)
    # the sliders' renderer (occupancy skipping) works on a voxel field too, and matches the full render
    z_s, z_a = torch.zeros(1, cfg.z_shape), torch.zeros(1, cfg.z_app)
    full = model.G_ema.render(z_s, z_a, cfg.poses.pose(60.0, 25.0)[None], 32)["images"][0].permute(1, 2, 0)
    assert (experiments.image_renderer(model.G_ema, size=32)(60.0, 25.0) - full).abs().max() < 2e-3


def test_holo_generator_draws_rotated_volumes_and_trains():
    cfg = graf.GRAFConfig()
    model = voxel_graf.create_holo(cfg, res=16, channels=4)
    G = model.G
    z_s, z_a = G.sample_codes(2, torch.Generator().manual_seed(0))
    c2w = torch.stack([cfg.poses.pose(0.0, 20.0), cfg.poses.pose(90.0, 20.0)])
    images = G.render(z_s, z_a, c2w)["images"]
    assert images.shape == (2, 3, cfg.image_size, cfg.image_size) and ((images >= 0) & (images <= 1)).all()
    # the camera changes what is drawn (the volume is rotated), the same camera draws the same image
    other = G.render(z_s, z_a, c2w.flip(0))["images"]
    assert not torch.allclose(images, other) and torch.equal(G.render(z_s, z_a, c2w)["images"], images)
    # a full-image patch (s = 1 at the pixel centres) reads the drawn image back
    uv = graf.full_image_coordinates(cfg.image_size, 2)
    with torch.no_grad():
        assert torch.allclose(G(z_s, z_a, c2w, uv), images, atol=1e-5)
    with pytest.raises(ValueError, match="draws 32"):
        G.render(z_s, z_a, c2w, size=64)
    with pytest.raises(TypeError, match="no rays"):
        G.render_rays(None, None, z_s, z_a)
    with pytest.raises(ValueError, match="renders no depth"):
        experiments.generated_consistency(G, z_s, z_a, n_views=2)
    history = graf.fit(model, torch.rand(6, 3, cfg.image_size, cfg.image_size), 2, progress=False)
    assert len(history["d_loss"]) == 2


def test_holo_generator_turns_the_world_into_the_cameras_frame():
    """A volume whose feature is the world x coordinate, seen from +z (azimuth 0, elevation 0): x
    grows to the right of the image; seen from +x (azimuth 90): the slice nearest the camera is x = +1."""
    cfg = graf.GRAFConfig(elevation_range=(0.0, 40.0))
    G = voxel_graf.HoloGenerator(cfg, res=16, channels=1)
    lin = torch.linspace(-1.0, 1.0, 16)
    G.volume = lambda z_s, z_a: lin.expand(16, 16, 16)[None, None].expand(len(z_s), 1, 16, 16, 16)
    captured = {}
    G.project.register_forward_pre_hook(lambda module, args: captured.update(aligned=args[0].reshape(-1, 16, 16, 16)))
    z_s, z_a = G.sample_codes(2)
    G.draw(z_s, z_a, torch.stack([cfg.poses.pose(0.0, 0.0), cfg.poses.pose(90.0, 0.0)]))
    front, side = captured["aligned"]  # (depth, rows, columns) in each camera's frame
    assert torch.allclose(front[8, 8], lin, atol=1e-5)  # columns left → right = world x −1 → +1
    assert torch.allclose(side[:, 8, 8], -lin, atol=1e-5)  # depth near → far = world x +1 → −1
