"""`xvad explain` and `xvad report` from the command line, with their error messages."""
import json

import numpy as np
import torch

from xvad.checkpoint import load_model, save_model
from xvad.cli import main
from xvad.explain import explain
from xvad.models import CRNN
from xvad.synthetic import make_clip, write_video
from xvad.video import preprocess_as, read_frames, shrink_images


def setup(tmp_path):
    torch.manual_seed(0)
    ckpt = save_model(CRNN("tiny", size=48, frames=6, precision="fp32"), str(tmp_path / "m.pt"))
    video = str(tmp_path / "v.mp4")
    write_video(video, make_clip(np.random.default_rng(1), frames=24, size=64).frames, fps=8)
    return ckpt, video


def test_explain_writes_every_output(tmp_path, capsys):
    ckpt, video = setup(tmp_path)
    out = tmp_path / "expl"
    assert main(["explain", video, "--checkpoint", ckpt, "--method", "gradcam,saliency", "--start", "0.5",
                 "--contours", "otsu", "--out", str(out)]) == 0
    for name in ("overlay_gradcam.mp4", "overlay_saliency.mp4", "contact_sheet.png", "maps.npz", "explanation.json"):
        assert (out / name).is_file(), name
    record = json.loads((out / "explanation.json").read_text())
    assert record["source"] == video
    maps = np.load(out / "maps.npz")
    assert maps["gradcam_maps"].shape == (6, 48, 48) and maps["saliency_frame_importance"].shape == (6,)
    # the same numbers as explaining, in Python, the 6 frames spread over the 3 s clip from 0.5 s on
    model = load_model(ckpt)
    frames, _ = read_frames(video, frames=6, start=0.5, duration=2.5)
    clip = preprocess_as(shrink_images(frames, model.config), model.config)   # shrunk first, then normalised
    for method in ("gradcam", "saliency"):
        want = explain(model, clip, method, normalize="clip")
        np.testing.assert_allclose(maps[f"{method}_maps"], want.maps, rtol=1e-5, atol=1e-6, err_msg=method)
        np.testing.assert_allclose(maps[f"{method}_frame_importance"], want.frame_importance, rtol=1e-5,
                                   atol=1e-9, err_msg=method)
    assert "wrote" in capsys.readouterr().out


def test_explain_and_report_errors_are_one_line(tmp_path, capsys):
    ckpt, video = setup(tmp_path)
    out = str(tmp_path / "o")
    assert main(["explain", video, "--checkpoint", ckpt, "--method", "gradcam,bogus", "--out", out]) == 2
    assert main(["explain", video, "--checkpoint", ckpt, "--target", "7", "--out", str(tmp_path / "o")]) == 2
    assert main(["explain", video, "--checkpoint", ckpt, "--layer", "backbone.nope", "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 100)
    assert main(["explain", str(tmp_path / "bad.mp4"), "--checkpoint", ckpt, "--out", str(tmp_path / "o")]) == 2
    assert main(["report", str(tmp_path / "bad.mp4"), "--checkpoint", ckpt, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("xvad: error:") for line in err)
    assert "bogus" in err[0] and "bad.mp4" in err[3]


def test_report_precision_option_is_used_and_shown(tmp_path, capsys):
    """Scores run at --precision, maps at --map-precision (fp32 unless asked), and the page says which
    precision made each."""
    torch.manual_seed(0)
    ckpt = save_model(CRNN("tiny", size=48, frames=6, precision="auto"), str(tmp_path / "auto.pt"))
    video = str(tmp_path / "v.mp4")
    write_video(video, make_clip(np.random.default_rng(1), frames=24, size=64).frames, fps=8)
    out = tmp_path / "r.html"
    assert main(["report", video, "--checkpoint", ckpt, "--precision", "fp32", "--map-precision", "fp32",
                 "--out", str(out)]) == 0
    assert "fp32 for the scores, fp32 for the maps" in out.read_text(encoding="utf-8")
    assert main(["report", video, "--checkpoint", ckpt, "--precision", "bf16", "--out", str(out)]) == 0
    assert "bf16 for the scores, fp32 for the maps" in out.read_text(encoding="utf-8")   # maps: fp32 by default


def test_explain_a_motion_crop_model_draws_the_maps_in_the_whole_frames(tmp_path):
    """With the motion crop each frame's square moves: the overlays are the whole frames, the maps where
    the model looked in each, and explanation.json records each square (x0, y0, x1, y1 in 0..1)."""
    import av

    from xvad.video import load_clip

    torch.manual_seed(0)
    model = CRNN("tiny", size=32, frames=6, precision="fp32", input="motion", crop="motion", shrink="first")
    ckpt = save_model(model, str(tmp_path / "m.pt"))
    rng = np.random.default_rng(2)
    frames = np.full((24, 64, 128, 3), 90, np.uint8)
    for t in range(24):                                    # something moving in the right part of a wide frame
        frames[t, 20:40, 96 + (t % 4) * 4: 106 + (t % 4) * 4] = rng.integers(150, 255, 3)
    video = str(tmp_path / "wide.mp4")
    write_video(video, frames, fps=8)
    out = tmp_path / "expl"
    assert main(["explain", video, "--checkpoint", ckpt, "--method", "gradcam", "--out", str(out)]) == 0
    record = json.loads((out / "explanation.json").read_text())
    assert record["frame_size"] == [64, 128]                          # the whole frames, not the squares
    clip = load_clip(video, load_model(ckpt).config)
    want = [[r.left / 128, r.top / 64, (r.left + r.width) / 128, (r.top + r.height) / 64] for r in clip.regions]
    np.testing.assert_allclose(record["boxes"], want, atol=1e-3)
    assert all(b[0] >= 0.4 for b in record["boxes"][1:])              # the squares follow the motion on the right
    with av.open(str(out / "overlay_gradcam.mp4")) as c:
        assert c.streams.video[0].width >= 128
