"""Adaptation: pooled windows against the model's own forward pass, the threshold and the weights by
hand, weighting that can be seen to work, base features, and `xvad adapt` end to end."""
import json
import os

import numpy as np
import pytest
import torch

from xvad.adapt import choose_threshold, clip_scores, load_base, save_base
from xvad.adapt.base import BaseFeatures, base_for
from xvad.adapt.core import site_folds
from xvad.adapt.heads import HeadRecipe, fit_heads, sample_weights
from xvad.adapt.pooled import alert_scores, clip_windows, head_log_proba, pool_windows
from xvad.errors import CheckpointError
from xvad.models import CRNN
from xvad.synthetic import make_clip, write_video
from xvad.video import load_clip

from conftest import SAME_BF16_KERNELS

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "surv-fight")


def pooled_model(seed: int = 0, **kw) -> CRNN:
    torch.manual_seed(seed)
    m = CRNN("tiny", size=32, frames=8, precision="fp32", input="motion+flow", temporal="pool", **kw).eval()
    with torch.no_grad():
        for head in m.head:
            head[-1].weight.normal_()
    return m


def test_pooled_heads_give_what_the_model_gives():
    """The heads on pooled windows equal ``classify`` on the frames of each window."""
    m = pooled_model()
    feats = torch.randn(20, m.feature_dim).abs()
    pooled = pool_windows(feats, m.streams, window=8, stride=3)
    starts = list(range(0, 20 - 8 + 1, 3))
    assert pooled.shape == (len(starts), 2, 2 * m.feature_dim // 2)
    with torch.no_grad():
        want = torch.cat([m.classify(feats[s:s + 8][None]) for s in starts]).log_softmax(-1)
        got = head_log_proba(m, pooled)
    assert torch.allclose(got, want, atol=1e-5)
    assert alert_scores(m, pooled) == pytest.approx(want.exp()[:, 1].numpy(), abs=1e-6)


def test_long_clip_windows_match_the_model_on_each_window(tmp_path):
    """A 5 s video at the model's 4 fps: every window's pooled score equals the model run on
    load_clip from that window's start (a brute force over the windows), and score_video reports the
    highest window with its times."""
    from xvad.evaluate import score_video

    video = str(tmp_path / "long.mp4")
    write_video(video, make_clip(np.random.default_rng(3), frames=40, size=32, anomaly=True).frames, fps=8)
    m = pooled_model(1, fps=4)
    windows = clip_windows(m, video, stride=2)
    scores = alert_scores(m, windows)
    starts = np.arange(len(scores)) * 2 / 4.0                       # seconds: 2 frames at 4 fps apart
    brute = [float(m.predict_proba(load_clip(video, m.config, start=float(t)).tensor())[1]) for t in starts]
    assert len(scores) == (20 - 8) // 2 + 1
    assert scores == pytest.approx(brute, abs=1e-4)
    r = score_video(m, video)
    best = int(np.argmax(brute))
    assert r["scores"]["alert"] == pytest.approx(brute[best], abs=1e-4)
    assert r["window"]["start"] == pytest.approx(starts[best], abs=0.13)
    assert r["window"]["end"] == pytest.approx(starts[best] + 7 / 4.0, abs=0.13)


def test_threshold_by_hand():
    # balanced accuracy 1 only between 0.3 and 0.35: the midpoint
    assert choose_threshold(np.array([0.1, 0.3, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.325)
    # inseparable: 0.75 balanced accuracy at 0.2 (below 0.3; 0.7 is also 0.75): nearest 0.5 on the logit scale
    t = choose_threshold(np.array([0.1, 0.3, 0.6, 0.8]), np.array([0, 1, 0, 1]))
    assert t == pytest.approx(0.7)
    assert choose_threshold(np.array([0.2, 0.9]), np.array([1, 1]), default=0.4) == 0.4    # one class: kept


def test_sample_weights_by_hand():
    labels = np.array([0, 0, 0, 1, 0, 1, 1])
    site = np.array([0, 0, 0, 0, 1, 1, 1], bool)
    w = sample_weights(labels, site, share=0.5) / 7
    # base: class 0 has 3 clips, class 1 one: 0.5 * 1/2 each class; site the same with its own counts
    assert w.tolist() == pytest.approx([0.25 / 3] * 3 + [0.25, 0.25, 0.125, 0.125])
    assert w[site].sum() == pytest.approx(0.5)
    assert sample_weights(labels, np.zeros(7, bool), 0.5).sum() == pytest.approx(7)


def test_weighting_moves_the_decision_on_the_site_clips():
    """Site clips that look like base clips of the other class: counted as ordinary samples (share 0)
    the heads follow the base set, given most of the weight they follow the site."""
    rng = np.random.default_rng(0)
    m = pooled_model(2)
    d = m.feature_dim          # per stream 2 * (D / 2)
    base = torch.from_numpy(rng.normal(size=(80, 2, d)).astype(np.float32))
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    base[labels == 1, :, :16] += 3.0
    site = base[:6].clone()            # class-0 looking clips ...
    site_labels = np.ones(6, int)      # ... that are alerts at this site
    pooled = torch.cat([base, site])
    y = np.r_[labels, site_labels]
    is_site = np.r_[np.zeros(80, bool), np.ones(6, bool)]
    recipe = HeadRecipe(epochs=30)
    plain = fit_heads(m, pooled, y, sample_weights(y, is_site, 0.0), recipe)
    weighted = fit_heads(m, pooled, y, sample_weights(y, is_site, 0.9), recipe)
    assert alert_scores(plain, site).mean() < 0.35
    assert alert_scores(weighted, site).mean() > 0.7
    assert alert_scores(weighted, base[40:]).mean() > 0.5          # the base alerts stay alerts


def test_a_camera_threshold_needs_four_clips_of_each_class():
    """The site's own threshold is chosen from four clips of each class on: with two of each (their
    four out-of-fold scores) it stays the model's, and the report says why."""
    from xvad.adapt import adapt
    from xvad.adapt.core import THRESHOLD_CLIPS

    rng = np.random.default_rng(1)
    m = pooled_model(3)
    m.extra = {"threshold": 0.37}
    d = m.feature_dim
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    pooled = torch.from_numpy(rng.normal(size=(60, 2, d)).astype(np.float32))
    pooled[labels == 1, :, :16] += 2.0
    base = BaseFeatures(pooled, labels, np.array([f"g{i % 6}" for i in range(60)]), [f"c{i}" for i in range(60)],
                        m.classes, "id", 4)

    def site(k: int) -> tuple[list[torch.Tensor], np.ndarray]:
        y = np.r_[np.zeros(k, int), np.ones(k, int)]
        clips = [torch.from_numpy(rng.normal(size=(2, 2, d)).astype(np.float32)) + 1.5 * c for c in y]
        return clips, y

    few = adapt(m, base, *site(THRESHOLD_CLIPS - 2))
    assert few.threshold == 0.37 and "stays the model's" in few.report["out_of_fold_note"]
    enough = adapt(m, base, *site(THRESHOLD_CLIPS))
    assert "optimistic" in enough.report["out_of_fold_note"]
    assert enough.threshold == enough.report["adapted_out_of_fold"]["threshold"] != 0.37


def test_site_folds_are_stratified():
    labels = np.array([0] * 7 + [1] * 3)
    folds = site_folds(labels, 0)
    assert len(folds) == 3 and sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert all((labels[f] == 1).sum() == 1 for f in folds)
    assert site_folds(np.array([0, 0, 1]), 0) == []


def test_base_features_roundtrip_and_ownership(tmp_path):
    m = pooled_model()
    m.checkpoint_id, m.checkpoint_path, m.extra = "abc123", str(tmp_path / "m.pt"), {}
    b = BaseFeatures(torch.randn(5, 2, m.feature_dim), np.array([0, 1, 0, 1, 1]), np.array(list("aabbc")),
                     [f"c{i}" for i in range(5)], m.classes, "abc123", 7)
    path = save_base(b, str(tmp_path / "m.base.npz"))
    back = base_for(m)
    assert back.epochs == 7 and back.clips == b.clips and back.groups.tolist() == list("aabbc")
    assert torch.allclose(back.pooled, b.pooled.half().float())
    m.checkpoint_id = "other"
    with pytest.raises(CheckpointError, match="belong to another checkpoint"):
        base_for(m, path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="bad.npz: not a readable base features file"):
        load_base(str(tmp_path / "bad.npz"))


def test_adapt_command_end_to_end(synthetic_data, tmp_path, capsys, one_torch_thread):
    """xvad train (pooled) -> --build-base -> xvad adapt SITE --out RUN -> xvad evaluate with the
    adapted checkpoint: it carries the site's threshold, which evaluate uses."""
    from xvad.checkpoint import load_model
    from xvad.cli import main
    from xvad.synthetic import make_dataset

    run = tmp_path / "run"
    assert main(["train", synthetic_data, "--out", str(run), "--backbone", "tiny", "--weights", "none",
                 "--frames", "8", "--size", "40", "--input", "motion+flow", "--temporal", "pool",
                 "--pooling", "max", "--epochs", "8", "--precision", "fp32", "--folds", "0",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    ckpt = str(run / "model.pt")
    written = load_base(str(run / "model.base.npz"))             # xvad train wrote it
    assert main(["adapt", "--build-base", synthetic_data, "--checkpoint", ckpt]) == 0
    rebuilt = load_base(str(run / "model.base.npz"))             # the same from the clips again
    assert written.checkpoint_id == rebuilt.checkpoint_id == load_model(ckpt).checkpoint_id
    assert written.epochs == rebuilt.epochs and written.clips == rebuilt.clips
    assert torch.allclose(written.pooled, rebuilt.pooled, atol=1e-3)
    site = make_dataset(str(tmp_path / "site"), per_class=5, frames=8, size=40, seed=7)
    out = tmp_path / "adapted"
    capsys.readouterr()
    assert main(["adapt", site, "--out", str(out), "--checkpoint", ckpt]) == 0
    printed = capsys.readouterr().out
    assert "adapted on 10 clips (5 alert, 5 normal)" in printed and "out of fold" in printed
    report = json.loads((out / "adapt.json").read_text())
    adapted = load_model(str(out / "model.pt"))
    assert adapted.extra["threshold"] == report["threshold"]
    assert adapted.extra["base_checkpoint_id"] == load_model(ckpt).checkpoint_id
    assert report["per_class"] == [5, 5] and len(report["clips"]) == 10
    # the adapted model's own clip scores, from the model run on each clip, against evaluate's
    assert main(["evaluate", site, "--checkpoint", str(out / "model.pt"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["threshold"] == pytest.approx(report["threshold"])
    scores = clip_scores(adapted, [clip_windows(adapted, os.path.join(site, c)) for c in report["clips"]])
    pred = (scores >= report["threshold"]).astype(int)
    assert metrics["accuracy"] == pytest.approx(float((pred == np.array(report["labels"])).mean()))
    # an adapted checkpoint adapts again: its base features are found through the one it came from
    assert main(["adapt", site, "--out", str(tmp_path / "again"), "--checkpoint", str(out / "model.pt")]) == 0


def test_adapt_errors_are_one_line(tmp_path, capsys):
    from xvad.cli import main

    assert main(["adapt", str(tmp_path / "nothing")]) == 2
    assert "give SITE_DATA and --out RUN" in capsys.readouterr().err
    assert main(["adapt", str(tmp_path), "--out", str(tmp_path / "o"), "--share", "1.5"]) == 2
    assert "--share" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="needs ../shared/data/surv-fight")
def test_shipped_base_features_are_the_shipped_models():
    """The base file shipped with the package belongs to the shipped model, and its rows are that
    model's pooled features of the named clips (recomputed here from the footage)."""
    import xvad
    from xvad.pretrained import default_checkpoint

    model = xvad.load_model()
    base = base_for(model)
    assert base.checkpoint_id == model.checkpoint_id and len(base.labels) == 232
    assert os.path.getsize(default_checkpoint().replace(".pt", ".base.npz")) < 3e6
    for i in (0, 117, 231):
        again = clip_windows(model, os.path.join(SHARED, base.clips[i]))[0]
        if SAME_BF16_KERNELS:
            assert torch.allclose(base.pooled[i], again, rtol=2e-2, atol=2e-2), base.clips[i]
        else:   # other bf16 kernels (conftest): a few features a clip move by up to a bf16 step of 6
            diff = (base.pooled[i] - again).abs()
            assert diff.mean() < 0.02 and diff.max() < 0.25, (base.clips[i], float(diff.mean()), float(diff.max()))


def test_the_package_stays_small():
    """Everything installed with xvad (weights, base features, sample footage, templates, code) stays
    a few MB: adaptation must not grow it by shipping footage or large caches."""
    import xvad

    root = os.path.dirname(xvad.__file__)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, dirs, files in os.walk(root)
                if "__pycache__" not in d for f in files)
    assert total < 6e6, f"{root}: {total / 1e6:.1f} MB"
