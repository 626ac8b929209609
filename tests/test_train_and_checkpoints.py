import json

import pytest
import torch

from gen3d_course.checkpoints import CheckpointError, checkpoint_info, load_checkpoint, save_checkpoint
from gen3d_course.train import train


def test_train_learns_a_line_and_records_history():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 64)[:, None]
    y = 3 * x + 1

    def step(i):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    saved = []
    history = train(step, 200, progress=False, log_every=10, checkpoint=saved.append,
                    checkpoint_every=100)
    assert history.steps[0] == 0 and history.steps[-1] == 199
    assert history.mean("loss") < 0.01 * history.mean("loss", first=True)
    assert saved == [99, 199, 199]
    assert history.seconds > 0


def test_train_stops_on_nan_and_bad_steps():
    with pytest.raises(FloatingPointError, match="step 3 produced .*nan"):
        train(lambda i: float("nan") if i == 3 else 1.0, 10, progress=False)
    with pytest.raises(ValueError, match="at least 1"):
        train(lambda i: 0.0, 0)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint("lin", model, command="gen3d-course train lin", seed=1, metrics={"iou": 0.9},
                    config={"in": 3}, directory=tmp_path)
    info = checkpoint_info("lin", tmp_path)
    assert info["metrics"] == {"iou": 0.9} and info["seed"] == 1 and len(info["sha256"]) == 64
    assert (tmp_path / "lin.pt").stat().st_mode & 0o777 == 0o644  # readable by everyone, as git ships it
    other = torch.nn.Linear(3, 2)
    load_checkpoint("lin", other, tmp_path)
    assert torch.equal(other.weight, model.weight)

    with pytest.raises(CheckpointError, match="(?s)does not fit this model.*size mismatch.*'in': 3"):
        load_checkpoint("lin", torch.nn.Linear(4, 2), tmp_path)
    with pytest.raises(CheckpointError, match="No checkpoint named 'nerf'.*gen3d-course train nerf"):
        load_checkpoint("nerf", directory=tmp_path)

    path = tmp_path / "lin.pt"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_checkpoint("lin", directory=tmp_path)
    path.unlink()
    with pytest.raises(CheckpointError, match="is missing.*gen3d-course train lin"):
        load_checkpoint("lin", directory=tmp_path)

    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint_info("lin", tmp_path)


def test_unreadable_file_with_matching_hash(tmp_path):
    save_checkpoint("x", {"w": torch.zeros(2)}, command="c", seed=0, directory=tmp_path)
    (tmp_path / "x.pt").write_bytes(b"not a torch file")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    import hashlib
    manifest["x"]["sha256"] = hashlib.sha256(b"not a torch file").hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint("x", directory=tmp_path)
