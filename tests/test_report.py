"""The decision report: a self-contained HTML page whose every image loads, also in a real browser."""
import base64
import io
import re
import shutil
import subprocess
from html import unescape

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from xvad.models import CRNN
from xvad.report import key_frames, stream_votes, write_report
from xvad.synthetic import make_clip, write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    clip = make_clip(np.random.default_rng(3), frames=40, size=48, anomaly=True)
    video = str(tmp / "long.mp4")
    write_video(video, clip.frames, fps=8)
    torch.manual_seed(0)
    model = CRNN("tiny", size=48, frames=8, fps=8.0, precision="fp32").eval()
    # an untrained model scores near 0.5: threshold 0 makes every window an alert, so the page has one
    out = str(tmp / "report.html")
    r = write_report(model, video, out, threshold=0.0, alert="1/1", stride=2)
    return out, r


def embedded_images(html):
    return re.findall(r"src='data:image/png;base64,([^']+)'", html)


def test_report_is_self_contained_and_complete(report):
    path, r = report
    html = open(path, encoding="utf-8").read()
    assert r["alerts"] == 1 and r["windows"] == (40 - 8) // 2 + 1
    assert "http://" not in html and "https://" not in html  # nothing to fetch: readable offline
    for section in ("Score over time", "Alert 1", "What the pictures mean", "The model", "Events", "Files"):
        assert section in html
    images = embedded_images(html)
    # timeline + per key frame (4): frame, Grad-CAM, saliency, the whole frame + frame-importance chart
    assert len(images) == 1 + 4 * 4 + 1
    for b64 in images:
        img = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
        assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    assert "alert start" in html


def test_key_frames_are_the_most_important_in_time_order():
    assert key_frames(np.array([0.1, 0.9, 0.0, 0.5, 0.7, 0.2]), k=3) == [1, 3, 4]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium_with_every_image_loaded(report, tmp_path):
    path, _ = report
    html = open(path, encoding="utf-8").read()
    probe = ("<script>window.addEventListener('load',()=>{const ok=[...document.images].every("
             "i=>i.complete&&i.naturalWidth>0);document.body.setAttribute('data-images-ok',String(ok));"
             "document.body.setAttribute('data-images',String(document.images.length));});</script></body>")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", probe), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", f"file://{probed}"], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images-ok="true"' in dom and 'data-images="18"' in dom
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,1800", f"--screenshot={shot}", f"file://{path}"],
                   capture_output=True, timeout=120)
    img = mpimg.imread(str(shot))
    assert img.shape[0] >= 1000 and img[..., :3].std() > 0.05  # a real page, not a blank one


def test_report_on_a_two_stream_model_says_what_it_sees(tmp_path):
    """motion+flow: the page explains both streams in words and still shows the RGB frames."""
    clip = make_clip(np.random.default_rng(4), frames=24, size=48, anomaly=True)
    video = str(tmp_path / "clip.mp4")
    write_video(video, clip.frames, fps=8)
    torch.manual_seed(0)
    model = CRNN("tiny", size=48, frames=8, fps=8.0, precision="fp32", input="motion+flow", temporal="pool").eval()
    out = str(tmp_path / "report.html")
    r = write_report(model, video, out, threshold=0.0, alert="1/1", stride=2)
    html = open(out, encoding="utf-8").read()
    assert r["alerts"] == 1 and len(embedded_images(html)) == 1 + 4 * 4 + 1
    assert "optical flow" in html and "Each map adds up both" in html
    assert "tiny per frame differences and optical flow" in html
    v = r["views"][0]   # each stream's own probability; their mean is the peak score the stream detector gave
    assert [name for name, _ in v.votes] == ["motion", "flow"]
    assert np.mean([p for _, p in v.votes]) == pytest.approx(v.peak_score, abs=1e-5)
    assert "Each stream's own probability of" not in html   # the apostrophe is html-escaped ...
    assert "Each stream's own probability of" in unescape(html)   # ... and means what it says


def test_stream_votes_say_when_one_stream_carries_the_alert():
    split = stream_votes([("motion", 0.99), ("flow", 0.21)], "fight")
    assert split == ("Each stream's own probability of fight in the peak window: motion images 0.99, "
                     "optical-flow images 0.21. The peak window score is their mean. They disagree: "
                     "only the motion images lean towards fight, "
                     "so weigh this alert with care.")
    assert stream_votes([("motion", 0.8), ("flow", 0.7)], "fight").endswith("They agree.")
