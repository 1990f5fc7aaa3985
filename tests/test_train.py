"""Training end to end on a synthetic task, skipped corrupt clips, k-fold, resume, evaluate, CLI."""
import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

from xvad.checkpoint import load_model
from xvad.cli import main
from xvad.evaluate import evaluate
from xvad.train import TrainConfig, train


def tiny_config(tmp_path, **kw):
    base = dict(backbone="tiny", weights=None, frames=8, size=40, pooling="max", hidden=32, epochs=25,
                patience=8, lr=3e-3, batch_size=8, finetune=True, precision="fp32",
                cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return TrainConfig.preset("paper", **base)


def test_learns_a_separable_synthetic_task(synthetic_data, tmp_path):
    out = tmp_path / "run"
    m = train(synthetic_data, str(out), tiny_config(tmp_path), progress=False)
    # validation clips were never trained on; the planted object makes the task separable
    assert m["summary"]["accuracy"] >= 0.8, m["summary"]
    assert m["summary"]["roc_auc"] >= 0.85
    for name in ("model.pt", "metrics.json", "predictions.csv", "curves.png"):
        assert (out / name).is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(saved["summary"])
    cm = np.array(saved["pooled_validation"]["confusion_matrix"])
    assert cm.shape == (2, 2) and saved["n_skipped"] == 0
    assert saved["summary"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())   # right ones / all
    model = load_model(str(out / "model.pt"))
    assert model.classes == ["normal", "alert"] and model.config["frames"] == 8


@pytest.mark.parametrize("input", ["motion", "motion+flow"])
def test_motion_input_with_pooled_head_learns_on_cached_features(synthetic_data, tmp_path, input):
    """The planted object flickers and jumps: frame differences (and their optical flow) with a frozen
    backbone find it."""
    cfg = tiny_config(tmp_path, finetune=False, input=input, temporal="pool", epochs=40, patience=10)
    m = train(synthetic_data, str(tmp_path / "run"), cfg, progress=False)
    assert m["summary"]["accuracy"] >= 0.8 and m["summary"]["roc_auc"] >= 0.85, m["summary"]
    model = load_model(str(tmp_path / "run" / "model.pt"))
    assert model.config["input"] == input and model.config["temporal"] == "pool"
    assert model.streams == len(input.split("+"))


def test_epochs_chosen_on_inner_folds(synthetic_data, tmp_path):
    """--inner-folds 3: each inner fold trains the full budget (no early stop); the epoch with the
    lowest inner-validation loss averaged over the folds is the one used."""
    from xvad.data import load_dataset
    from xvad.models import CRNN
    from xvad.train import choose_epochs, prepare_inputs

    cfg = tiny_config(tmp_path, finetune=False, inner_folds=3, epochs=6, temporal="pool")
    data = load_dataset(synthetic_data)
    model = CRNN(num_classes=2, classes=data.classes, **cfg.model_kwargs())
    inputs, _ = prepare_inputs(model, data, cfg, progress=False)
    train_idx = np.arange(len(data))
    sel = choose_epochs(model, inputs, data, train_idx, lambda idx: [(int(i), 0) for i in idx], cfg, 0, "t", False)
    losses = [row["val_loss"] for row in sel["history"]]
    assert len(losses) == 6
    assert sel["best_epoch"] == int(np.argmin(losses)) + 1
    assert losses[0] > min(losses)                                 # the loss does come down
    m = train(synthetic_data, str(tmp_path / "run"), replace(cfg, folds=2), progress=False)
    assert len(m["best_epochs"]) == 2 and all(1 <= e <= 6 for e in m["best_epochs"])


def test_corrupt_clip_is_skipped_and_counted(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "alert" / "broken.mp4").write_bytes(b"\x00\x01 not a video at all" * 50)
    m = train(str(data), str(tmp_path / "run"), tiny_config(tmp_path, finetune=False, epochs=3), progress=False)
    assert m["n_skipped"] == 1 and m["n_clips"] == 33 and m["n_used"] == 32
    assert "broken.mp4" in m["skipped"][0]["error"]


def test_kfold_with_cached_features_and_resume(synthetic_data, tmp_path, monkeypatch):
    from xvad.train import RunState

    cfg = tiny_config(tmp_path, finetune=False, folds=3, epochs=4, augment=2)
    out = tmp_path / "run"
    monkeypatch.setattr(RunState, "clear", lambda self: None)  # keep state.json to fake an interruption
    m = train(synthetic_data, str(out), cfg, progress=False)
    accuracies = [f["accuracy"] for f in m["folds"]]
    assert len(accuracies) == 3
    cv = m["cross_validation"]["accuracy"]
    assert cv["mean"] == pytest.approx(sum(accuracies) / 3)
    assert cv["std"] == pytest.approx((sum((a - cv["mean"]) ** 2 for a in accuracies) / 3) ** 0.5)
    n_cached = sum(len(f) for _, _, f in os.walk(tmp_path / "cache"))
    assert n_cached == 32 * 2  # each clip and its mirrored view, extracted once
    # pretend the run was killed after fold 1, with a recognisable fold-1 record
    state = json.loads((out / "state.json").read_text())
    state["folds"] = state["folds"][:1]
    state["folds"][0]["best_epoch"] = 77
    (out / "state.json").write_text(json.dumps(state))
    m2 = train(synthetic_data, str(out), cfg, progress=False)
    assert m2["best_epochs"][0] == 77                       # fold 1 taken from the saved state
    assert m2["folds"][1:] == m["folds"][1:]                # folds 2 and 3 recomputed identically


def test_evaluate_and_cli(synthetic_data, tmp_path, capsys):
    out = tmp_path / "run"
    train(synthetic_data, str(out), tiny_config(tmp_path, epochs=6), progress=False)
    model = load_model(str(out / "model.pt"))
    m = evaluate(model, synthetic_data, str(tmp_path / "eval"), progress=False)
    assert m["n"] == 32 and (tmp_path / "eval" / "predictions.csv").is_file()
    video = os.path.join(synthetic_data, "alert", "alert_000.mp4")
    assert main(["predict", video, "--checkpoint", str(out / "model.pt")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["scores"]) == {"normal", "alert"} and np.isclose(sum(line["scores"].values()), 1, atol=1e-4)
    from xvad.features import clip_tensor

    direct = model.predict_proba(clip_tensor(video, model.config)).tolist()   # the model on the whole clip
    assert [line["scores"][c] for c in model.classes] == pytest.approx(direct, abs=1e-4)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.mp4"), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xvad: error:") and "nope.pt" in err and "\n" not in err
    (tmp_path / "bad.pt").write_text("junk")
    bad = str(tmp_path / "bad.pt")
    assert main(["evaluate", str(tmp_path), "--checkpoint", bad, "--out", str(tmp_path / "o")]) == 2
    assert main(["train", str(tmp_path / "nodata"), "--out", str(tmp_path / "r"), "--backbone", "tiny",
                 "--weights", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("xvad: error:") for e in err)
    # the motion crop cuts each frame's square before shrinking it: a model that shrinks last cannot have it
    (tmp_path / "data" / "a").mkdir(parents=True)
    assert main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--crop", "motion",
                 "--shrink", "last"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xvad: error:") and "shrink first" in err and "\n" not in err


def test_predict_gives_each_streams_probabilities(tmp_path):
    """A motion+flow model: "streams" holds each head's own probabilities and "scores" is their mean,
    which is what the model's own forward pass gives (predict_proba on the same clip)."""
    import torch

    from xvad.evaluate import score_video
    from xvad.features import clip_tensor
    from xvad.models import CRNN
    from xvad.synthetic import make_clip, write_video

    video = str(tmp_path / "clip.mp4")
    write_video(video, make_clip(np.random.default_rng(5), frames=16, size=32, anomaly=True).frames, fps=8)
    torch.manual_seed(0)
    model = CRNN("tiny", size=32, frames=8, precision="fp32", input="motion+flow", temporal="pool").eval()
    with torch.no_grad():
        for head in model.head:
            head[-1].weight.normal_()
    r = score_video(model, video)
    direct = model.predict_proba(clip_tensor(video, model.config)).numpy()
    assert set(r["streams"]) == {"motion", "flow"}
    assert [r["scores"][c] for c in model.classes] == pytest.approx(direct.tolist(), abs=1e-5)
    mean = [(r["streams"]["motion"][c] + r["streams"]["flow"][c]) / 2 for c in model.classes]
    assert mean == pytest.approx(direct.tolist(), abs=1e-5)
    assert r["streams"]["motion"] != pytest.approx(r["streams"]["flow"], abs=1e-3)   # two real heads
    assert "streams" not in score_video(CRNN("tiny", size=32, frames=8, precision="fp32").eval(), video)


def test_finetuning_folds_start_from_the_same_backbone(synthetic_data, tmp_path):
    """Fine-tuning: a fold's run begins from the pretrained backbone, not from the one an earlier fold
    trained (whose training clips include this fold's validation clips)."""
    import copy

    import torch

    from xvad.data import load_dataset
    from xvad.models import CRNN
    from xvad.train import fit, predict_inputs, prepare_inputs

    cfg = tiny_config(tmp_path, epochs=3, backbone_lr=1e-2)
    data = load_dataset(synthetic_data)
    torch.manual_seed(0)
    model = CRNN.from_config(cfg, 2, data.classes, freeze_backbone=False)
    inputs, _ = prepare_inputs(model, data, cfg, progress=False)
    start = copy.deepcopy(model.state_dict())
    first, second = [(i, 0) for i in range(0, 16)], [(i, 0) for i in range(8, 32)]
    probe = [(i, 0) for i in range(0, 8)]

    def after(model, runs, use_start):
        for items in runs:
            fit(model, inputs, items, [], data.labels, cfg, cfg.epochs, 1, "", False, start if use_start else None)
        return predict_inputs(model, inputs, probe, cfg)

    fresh = after(model, [second], True)
    assert torch.equal(after(model, [first, second], True), fresh)          # the first run leaves no trace
    assert not torch.allclose(after(model, [first, second], False), fresh)  # without it, it would


def test_held_out_clips_scored_as_a_stream(tmp_path):
    """--stream-fps: each held-out clip is also scored as a stream scores it (its highest window at that
    rate), reported apart; the saved model samples at that rate, and its stream scores agree with
    `xvad predict`'s, which runs the model on the clips themselves."""
    from xvad.data import load_dataset
    from xvad.evaluate import predict
    from xvad.features import stream_features
    from xvad.synthetic import make_dataset
    from xvad.train import stream_proba

    data = make_dataset(str(tmp_path / "data"), per_class=8, frames=28, size=40, seed=3)   # 3.5 s at 8 fps
    cfg = tiny_config(tmp_path, finetune=False, input="motion", temporal="pool", folds=2, epochs=30,
                      stream_fps=8.0)
    m = train(data, str(tmp_path / "run"), cfg, progress=False)
    s = m["as_stream"]
    assert s["fps"] == 8.0 and len(s["folds"]) == 2
    cm = np.array(s["pooled_validation"]["confusion_matrix"])
    assert cm.sum() == 16 and s["summary"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert s["summary"]["accuracy"] >= 0.75, s["summary"]                # the object is there to find
    import csv
    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    right = [(float(r["stream_p_alert"]) >= 0.5) == (r["label"] == "alert") for r in rows]
    assert len(rows) == 16 and np.mean(right) == pytest.approx(s["summary"]["accuracy"])
    model = load_model(str(tmp_path / "run" / "model.pt")).set_precision("fp32")
    assert model.config["fps"] == 8.0
    paths = [x.path for x in load_dataset(data).samples]
    feats, failed = stream_features(model, paths, 8.0, str(tmp_path / "cache2"), progress=False)
    assert not failed and all(len(f) == 28 for f in feats.values())
    ours = stream_proba(model, [feats[i] for i in range(len(paths))])[:, 1].numpy()
    theirs = np.array([r["scores"]["alert"] for r in predict(model, paths)])
    np.testing.assert_allclose(ours, theirs, atol=2e-3)                   # float16 cache against fresh fp32
    assert np.std(theirs) > 0.05
