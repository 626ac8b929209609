import pytest
import torch

from gen3d_course import config


def test_modes_and_budget(monkeypatch):
    monkeypatch.delenv("GEN3D_MODE", raising=False)
    assert config.mode() == "lecture"
    assert config.budget(lecture=3000, fast=150) == 3000
    monkeypatch.setenv("GEN3D_MODE", "fast")
    assert config.budget(lecture=3000, fast=150) == 150
    monkeypatch.setenv("GEN3D_MODE", "full")
    assert config.budget(lecture=3000, fast=150) == 3000
    assert config.budget(lecture=3000, fast=150, full=9000) == 9000
    monkeypatch.setenv("GEN3D_MODE", "quick")
    with pytest.raises(ValueError, match="'quick' is not a run mode; use one of fast, lecture, full"):
        config.mode()


def test_seeding_repeats_draws():
    config.seed_everything(3)
    a = torch.rand(4)
    g = config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(3)))


def test_device_pick():
    assert config.pick_device().type in {"cuda", "mps", "cpu"}
    assert config.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            config.pick_device("cuda")
    assert "mode=" in config.describe()
