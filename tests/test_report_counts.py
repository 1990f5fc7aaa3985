"""The report counts every alert of the video, as the detector's events file records them, and
explains the highest; its words about the contours come from the rule that drew them."""
import json
import re
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from xvad.models import CRNN
from xvad.render import clip_contours
from xvad.report import Contours, key_frames, write_report
from xvad.synthetic import make_clip, write_video
from xvad.video import preprocess_as

FPS, SIZE, WINDOW, STRIDE = 8, 48, 8, 2
BURST, CALM, BURSTS = 16, 20, 7          # frames; the last burst runs to the end of the video


def burst_video(path):
    """Drifting shapes with seven planted bursts of a flickering, jumping checkerboard (a bigger one in
    some bursts); returns the frames and which of them are in a burst."""
    starts = [16 + i * (BURST + CALM) for i in range(BURSTS)]
    total = starts[-1] + BURST + 4
    frames = make_clip(np.random.default_rng(5), frames=total, size=SIZE, anomaly=False).frames.copy()
    rng = np.random.default_rng(6)
    planted = np.zeros(total, bool)
    for i, s in enumerate(starts):
        side = 6 + 2 * (i % 4)
        for t in range(s, total if i == BURSTS - 1 else s + BURST):
            x, y = rng.integers(4, SIZE - side - 4, 2)
            cells = (np.add.outer(np.arange(side) // 2, np.arange(side) // 2) + t) % 2
            frames[t, y:y + side, x:x + side] = np.where(cells[..., None] == 1, 245, 10)
            planted[t] = True
    write_video(path, frames, fps=FPS)
    return frames, planted


def burst_model(frames, planted):
    """A tiny pooled model whose linear head is fitted, in a fraction of a second, to tell windows inside
    a burst from windows outside one; the logits are then scaled down so that peaks differ."""
    torch.manual_seed(0)
    model = CRNN("tiny", size=SIZE, frames=WINDOW, fps=float(FPS), precision="fp32", temporal="pool").eval()
    with torch.no_grad():
        f = model.frame_features(preprocess_as(frames, model.config))
    spans = [(a, a + WINDOW) for a in range(0, len(frames) - WINDOW + 1, STRIDE)]
    x = torch.stack([torch.cat([f[a:b].mean(0), f[a:b].amax(0)]) for a, b in spans])
    share = np.array([planted[a:b].mean() for a, b in spans])
    pure = torch.from_numpy((share == 0) | (share == 1))
    norm, linear = model.head[0], model.head[2]
    norm.reset_running_stats()
    norm.momentum = None           # the plain mean and variance of the windows
    norm.train()
    with torch.no_grad():
        norm(x)
    norm.eval()
    z = norm(x).detach()
    y = torch.from_numpy(share > 0.5).long()
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(linear(z[pure]), y[pure]).backward()
        opt.step()
    with torch.no_grad():
        logits = linear(z)
        spread = (logits[:, 1] - logits[:, 0]).abs().max()
        linear.weight.mul_(4.0 / spread)
        linear.bias.mul_(4.0 / spread)
    return model


class Page(HTMLParser):
    """What the report shows: the verdict, the shaded intervals, the events rows, the explained sections."""

    def __init__(self, html):
        super().__init__()
        self.verdict, self.shaded, self.rows, self.sections = {}, None, [], []
        self.text, self._in_verdict = [], False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "verdict":
            self.verdict, self._in_verdict = a, True
        elif a.get("id") == "timeline":
            self.shaded = json.loads(a["data-shaded"])
        elif tag == "tr" and a.get("class") == "event":
            self.rows.append((int(a["data-alert"]), a["data-event"], float(a["data-time"])))
        elif tag == "section" and a.get("class") == "explained":
            self.sections.append(int(a["data-alert"]))

    def handle_endtag(self, tag):
        if tag == "div":
            self._in_verdict = False

    def handle_data(self, data):
        if self._in_verdict:
            self.text.append(data)


@pytest.fixture(scope="module")
def bursts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bursts")
    video, events, out = str(tmp / "bursts.mp4"), str(tmp / "events.jsonl"), str(tmp / "report.html")
    model = burst_model(*burst_video(video))
    r = write_report(model, video, out, threshold=0.5, alert="2/2", stride=STRIDE, events=events, max_alerts=5)
    lines = [json.loads(line) for line in open(events, encoding="utf-8")]
    return model, video, r, open(out, encoding="utf-8").read(), lines


def test_every_count_on_the_page_matches_the_events_file(bursts):
    _, _, _, html, lines = bursts
    starts = {e["alert"]: e for e in lines if e["type"] == "alert_start"}
    ends = {e["alert"]: e for e in lines if e["type"] == "alert_end"}
    closed = [a for a, e in ends.items() if e["reason"] == "scores"]
    still = [a for a, e in ends.items() if e["reason"] == "end"]
    assert len(closed) >= 6 and len(starts) > 5 and still == [max(starts)]   # the video this test needs
    assert sorted(starts) == sorted(ends)
    page = Page(html)
    n = len(starts)

    assert int(page.verdict["data-alerts"]) == n and int(page.verdict["data-explained"]) == 5
    words = unescape(" ".join(page.text))
    assert re.search(r"(\d+) alerts raised; the (\d+) highest explained below", words).groups() == (str(n), "5")
    assert f"Alert {still[0]} was still on when the video ended." in words

    # the plot shades each alert from its start to its end (the open one to the video's end)
    expected = [[starts[a]["time"], ends[a]["time"]] for a in sorted(starts)]
    assert np.shape(page.shaded) == (n, 2)
    np.testing.assert_allclose(page.shaded, expected, atol=1e-3)

    # the events table: a start and an end row per alert, at the events file's times
    for kind, record in (("alert start", starts), ("alert end", ends)):
        rows = [(a, t) for a, k, t in page.rows if k == kind]
        assert [a for a, _ in rows] == sorted(record)
        np.testing.assert_allclose([t for _, t in rows], [record[a]["time"] for a in sorted(record)], atol=0.006)
    assert len(page.rows) == 2 * n

    # explained in full: the five highest peaks the detector recorded, in time order
    ranked = sorted(ends, key=lambda a: (-ends[a]["peak_score"], a))
    assert len({round(ends[a]["peak_score"], 6) for a in ranked[4:6]}) == 2   # a real choice at the cut
    assert page.sections == sorted(ranked[:5])
    assert len(re.findall(r"<h2>Alert \d+: from", html)) == 5


def test_the_summary_counts_every_alert(bursts):
    _, _, r, _, lines = bursts
    assert r["alerts"] == sum(e["type"] == "alert_start" for e in lines) and r["explained"] == 5
    assert [v.alert.id for v in r["views"]] == Page(open(r["report"], encoding="utf-8").read()).sections


def test_the_contour_words_follow_the_rule_that_drew_them(bursts, tmp_path):
    model, video, r, html, _ = bursts
    assert "top 10 % of that map" in html
    out = str(tmp_path / "q25.html")
    again = write_report(model, video, out, threshold=0.5, alert="2/2", stride=STRIDE, max_alerts=1,
                         results=r["results"], contours=Contours("top", 25.0))
    page = open(out, encoding="utf-8").read()
    assert "top 25 % of that map" in page and "top 10 %" not in page
    gc = again["views"][0].explanations["gradcam"]
    regions = clip_contours(gc.maps, mode="top", q=25.0)   # what q=25 outlines, computed here
    shown = [int(k) for k in re.findall(r"Grad-CAM with contours \((\d+) region", page)]
    assert shown == [len(regions[t]) for t in key_frames(gc.frame_importance)]
    otsu = str(tmp_path / "otsu.html")
    write_report(model, video, otsu, threshold=0.5, alert="2/2", stride=STRIDE, max_alerts=1,
                 results=r["results"], contours=Contours("otsu"))
    assert "above Otsu's threshold" in unescape(open(otsu, encoding="utf-8").read())


def test_a_contour_rule_that_cannot_draw_is_refused():
    with pytest.raises(ValueError, match="contour q"):
        Contours("top", 0.0)
    with pytest.raises(ValueError, match="contour mode"):
        Contours("median")
