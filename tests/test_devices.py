"""Device plumbing, checked on the CPU: the pick, the override, training that hands models back,
and checkpoints loaded onto the device asked for."""
import pytest
import torch

from gen3d_course import config
from gen3d_course.checkpoints import load_checkpoint, save_checkpoint
from gen3d_course.data.shapes import shape_collection
from gen3d_course.models import autoencoders as ae
from gen3d_course.models import occnet
from gen3d_course.train import on_device

torch.set_num_threads(1)


def test_pick_device_prefers_what_it_is_told(monkeypatch):
    monkeypatch.delenv(config.DEVICE_VARIABLE, raising=False)
    assert config.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(config.DEVICE_VARIABLE, "cpu")
    assert config.pick_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv(config.DEVICE_VARIABLE, "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            config.pick_device()


def test_on_device_hands_the_modules_back_even_after_an_error():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="boom"), on_device(model, device="cpu") as device:
        assert device == torch.device("cpu")
        raise RuntimeError("boom")
    assert next(model.parameters()).device == torch.device("cpu")


def _vae_history(device):
    torch.manual_seed(0)
    model = ae.VAE((8,), latent_dim=2, hidden=(16,))
    data = torch.rand(64, 8)
    return ae.fit(model, data, 20, batch_size=16, progress=False, device=device)["loss"]


def test_training_on_an_explicit_cpu_gives_the_default_numbers():
    assert _vae_history("cpu") == _vae_history(None)


def test_occupancy_fit_on_an_explicit_cpu_gives_the_default_numbers():
    data = occnet.make_occupancy_data(shape_collection(1)[:2], n_points=512, n_surface=256, seed=0)

    def losses(device):
        torch.manual_seed(0)
        model = occnet.OccupancyNetwork(z_dim=8, hidden=16, blocks=1, encoder_hidden=16, frequencies=2)
        return occnet.fit(model, data, 5, batch=2, k=64, n_cloud=32, progress=False, device=device)["loss"]

    assert losses("cpu") == losses(None)


def test_checkpoints_load_onto_the_device_asked_for(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint("tiny", model, command="test", seed=0, directory=tmp_path)
    state = load_checkpoint("tiny", directory=tmp_path, device="meta")
    assert all(t.device.type == "meta" for t in state.values())  # map_location is the device
    restored = load_checkpoint("tiny", torch.nn.Linear(3, 2), directory=tmp_path, device="cpu")
    assert torch.equal(restored.weight, model.weight) and restored.weight.device.type == "cpu"
