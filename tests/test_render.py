"""Contours, drawing, video, contact sheet and explanation files of xvad.render, on hand-made maps."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import av
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from reference_image import bfs_label, bilinear_resize, brute_otsu, brute_otsu_binned, gaussian_reference

from xvad.jsonio import json_safe, write_json
from xvad.render import (
    Region,
    atomic_path,
    blend,
    clip_contours,
    colorize,
    contact_sheet,
    draw_boxes,
    draw_polygons,
    draw_text,
    explanation_record,
    find_regions,
    frame_subsample,
    importance_strip,
    label,
    overlay_frames,
    point_in_polygon,
    polygon_area,
    resize_maps,
    save_maps,
    threshold,
    write_explanation_outputs,
    write_video,
)


@dataclass
class Expl:
    """Test data with the fields of an explanation."""
    maps: np.ndarray
    raw: np.ndarray
    frame_importance: np.ndarray
    score: float
    target: int
    method: str
    options: dict = field(default_factory=dict)
    class_name: str | None = None


def gaussian(h, w, cx, cy, sigma, amp=1.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return (amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))).astype(np.float32)


def blob_clip(T=6, h=48, w=64, method="gradcam"):
    maps = np.stack([gaussian(h, w, 14 + 5 * t, 20, 5) for t in range(T)])
    imp = np.linspace(0.2, 1.0, T).astype(np.float32)
    return Expl(maps, maps * 3, imp, 0.87, 1, method, {"layer": "features.3", "steps": np.int64(8)},
                "anomaly")


def frames_like(T, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (T, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# contours
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_matches_breadth_first_search(connectivity):
    rng = np.random.default_rng(connectivity)
    for density in (0.3, 0.5, 0.6):
        mask = rng.random((23, 31)) < density
        got, n = label(mask, connectivity)
        want, m = bfs_label(mask, connectivity)
        assert n == m
        assert np.array_equal(got, want)          # same components, same (raster) numbering
    assert label(np.zeros((4, 5), bool))[1] == 0


def random_blobs(rng, h, w, sigma=2.0):
    """A smooth random map: white noise under a Gaussian blur (by FFT, not the code under test)."""
    noise = rng.standard_normal((h, w))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_matches_breadth_first_search_on_random_masks(connectivity):
    rng = np.random.default_rng(10 + connectivity)
    for h, w in ((1, 17), (17, 1), (40, 60), (180, 240)):     # the last is big enough for threads
        for mask in (rng.random((h, w)) < 0.45, random_blobs(rng, h, w) > 0.1):
            got, n = label(mask, connectivity)
            want, m = bfs_label(mask, connectivity)
            assert n == m and got.dtype == np.int32
            assert np.array_equal(got, want)
    assert label(np.ones((3, 4), bool))[1] == 1


def test_regions_box_area_and_peak_match_the_labelling():
    rng = np.random.default_rng(3)
    m = random_blobs(rng, 50, 70).astype(np.float32)
    level = 0.15
    want, n = bfs_label(m > level, 8)
    regions = find_regions(m, level, min_area=1)
    assert len(regions) == n
    for r in regions:
        lab = want[r.peak[1], r.peak[0]]
        ys, xs = np.nonzero(want == lab)
        assert r.area == len(xs)
        assert r.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert r.value == pytest.approx(m[want == lab].max())
        assert r.mass == pytest.approx(np.clip(m, 0, None)[want == lab].sum() / np.clip(m, 0, None).sum())


def test_polygons_enclose_exactly_the_kept_pixels():
    """Every pixel centre inside an odd number of the regions' outlines (outer lines, parts and
    holes, even-odd rule by matplotlib's path test) is a kept pixel, and every kept pixel is inside."""
    from matplotlib.path import Path

    rng = np.random.default_rng(4)
    for h, w in ((40, 56), (64, 64)):
        for _ in range(3):
            m = random_blobs(rng, h, w, sigma=1.5).astype(np.float32)
            level = threshold(m, "top", 30.0)
            regions = find_regions(m, level, min_area=1)
            yy, xx = np.mgrid[0:h, 0:w]
            centres = np.c_[xx.ravel(), yy.ravel()].astype(float)
            count = np.zeros(h * w, int)
            for r in regions:
                for poly in r.polygons + r.holes:
                    count += Path(np.asarray(poly)).contains_points(centres)
            inside = (count % 2 == 1).reshape(h, w)
            assert np.array_equal(inside, m > level)       # tolerance: none (0 of h*w pixels)


def test_otsu_matches_brute_force_over_the_same_bins():
    rng = np.random.default_rng(5)
    for k in range(6):
        centre = rng.uniform(0.3, 0.7)
        values = np.concatenate([rng.normal(centre - 0.2, rng.uniform(0.03, 0.1), 2000),
                                 rng.normal(centre + 0.2, rng.uniform(0.03, 0.1), 200 * int(rng.integers(1, 10)))])
        maps = (values if k % 2 else rng.gamma(2.0, 1.0, values.size)).reshape(-1, 20, 10).astype(np.float32)
        for bins in (256, 64):
            edge = brute_otsu_binned(maps, bins)
            lv = threshold(maps, "otsu", bins=bins)
            assert np.array_equal(maps > lv, maps >= edge)   # the same split of the values


def test_rectangle_box_area_polygon():
    m = np.zeros((40, 50), np.float32)
    m[12:22, 15:33] = 1.0                          # x 15..32, y 12..21
    (r,) = find_regions(m, 0.5, min_area=1)
    assert r.box == (15, 12, 33, 22)               # exclusive x1, y1
    assert r.area == 10 * 18 == int((m > 0.5).sum())
    assert point_in_polygon(24, 17, r.polygon)
    assert not point_in_polygon(10, 17, r.polygon)
    assert r.polygon[0] == r.polygon[-1]           # closed
    xs, ys = np.array(r.polygon).T
    assert abs(xs.min() - 14.5) <= 1 and abs(xs.max() - 32.5) <= 1
    assert abs(ys.min() - 11.5) <= 1 and abs(ys.max() - 21.5) <= 1
    assert abs(abs(polygon_area(r.polygon)) - r.area) <= 2      # corners cut by half a pixel
    assert r.mass == pytest.approx(1.0)
    assert r.holes == [] and r.parts == []
    # top-q on the clip picks exactly the rectangle (ties at 0 are dropped together)
    lv = threshold(m[None], "top", 10.0)
    assert 0.0 < lv < 1.0
    assert np.array_equal(m > lv, m > 0.5)


def test_blob_contour_encloses_centre():
    m = gaussian(64, 80, 47, 22, 6)
    regions = find_regions(m, threshold(m, "top", 5.0))
    assert len(regions) == 1
    r = regions[0]
    assert point_in_polygon(47, 22, r.polygon)
    assert r.peak == (47, 22)
    x0, y0, x1, y1 = r.box
    assert x0 < 47 < x1 and y0 < 22 < y1
    assert abs(r.area - 0.05 * m.size) <= 0.01 * m.size


def test_two_blobs_two_regions_sorted_by_mass():
    m = gaussian(60, 90, 20, 30, 5) + gaussian(60, 90, 68, 28, 7, amp=0.9)
    regions = find_regions(m, 0.3)
    assert len(regions) == 2
    big, small = regions                              # the wider blob holds more mass
    assert big.mass > small.mass > 0 and big.mass + small.mass < 1
    assert point_in_polygon(68, 28, big.polygon) and not point_in_polygon(20, 30, big.polygon)
    assert point_in_polygon(20, 30, small.polygon) and not point_in_polygon(68, 28, small.polygon)
    assert big.peak == (68, 28) and small.peak == (20, 30)


def test_region_touching_border_closes_and_hole_is_found():
    m = np.zeros((30, 30), np.float32)
    m[0:10, 0:12] = 1.0                               # touches the top-left corner
    m[15:27, 15:27] = 1.0
    m[19:23, 19:23] = 0.0                             # a hole in the second square
    regions = find_regions(m, 0.5, min_area=1)
    assert len(regions) == 2
    corner = next(r for r in regions if r.box[0] == 0)
    assert corner.box == (0, 0, 12, 10) and corner.area == 120
    assert corner.polygon[0] == corner.polygon[-1]
    assert point_in_polygon(0, 0, corner.polygon)
    ring = next(r for r in regions if r.box[0] == 15)
    assert ring.area == 144 - 16
    assert len(ring.holes) == 1
    assert point_in_polygon(21, 21, ring.polygon) and point_in_polygon(21, 21, ring.holes[0])
    assert not point_in_polygon(16, 16, ring.holes[0])


def test_min_area_and_flat_maps():
    m = np.zeros((50, 50), np.float32)
    m[5:7, 5:7] = 1.0                                 # 4 px
    m[20:40, 20:40] = 1.0                             # 400 px
    assert len(find_regions(m, 0.5, min_area=1)) == 2
    assert len(find_regions(m, 0.5, min_area=10)) == 1
    assert len(find_regions(m, 0.5, min_area=0.01)) == 1      # a share of the frame: 25 px
    flat = np.full((20, 20), 0.3, np.float32)
    assert find_regions(flat, threshold(flat)) == []               # a constant map keeps nothing
    assert len(find_regions(m > 0.5, min_area=1)) == 2         # a boolean mask works too


def test_top_q_keeps_about_q_percent():
    rng = np.random.default_rng(0)
    maps = rng.random((8, 32, 32)).astype(np.float32)
    for q in (5.0, 10.0, 25.0):
        kept = float((maps > threshold(maps, "top", q)).mean())
        assert kept == pytest.approx(q / 100, abs=0.002)
    # one threshold for the whole clip: a faint frame gets little or nothing
    maps[0] *= 0.1
    lv = threshold(maps, "top", 10.0)
    assert (maps[0] > lv).mean() < 0.01
    with pytest.raises(ValueError):
        threshold(maps, "median")


def test_otsu_between_modes_matches_brute_force():
    rng = np.random.default_rng(1)
    low = rng.normal(0.2, 0.05, 3000)
    high = rng.normal(0.75, 0.07, 1000)
    values = np.clip(np.concatenate([low, high]), 0, 1)
    maps = rng.permutation(values).reshape(4, 25, 40).astype(np.float32)
    lv = threshold(maps, "otsu")
    ref = brute_otsu(maps)
    assert 0.3 < lv < 0.65 and 0.3 < ref < 0.65
    disagree = np.mean((maps > lv) != (maps > ref))
    assert disagree < 0.005
    assert abs(lv - ref) < 0.02


def test_clip_contours_per_frame_and_dict_round_trip():
    e = blob_clip()
    regions = clip_contours(e, "top", 10.0)
    assert len(regions) == len(e.maps)
    for t, frame in enumerate(regions):
        assert len(frame) == 1
        assert point_in_polygon(14 + 5 * t, 20, frame[0].polygon)
    d = json.loads(json.dumps(regions[2][0].to_dict()))
    back = Region.from_dict(d)
    assert back.box == regions[2][0].box and back.area == regions[2][0].area
    assert all(abs(x - round(x, 1)) < 1e-9 for pt in d["polygon"] for x in pt)


def test_region_scaled_to_frames():
    m = np.zeros((20, 30), np.float32)
    m[4:10, 6:15] = 1
    (r,) = find_regions(m, 0.5, min_area=1)
    s = r.scaled(2.0, 2.0)
    assert s.box == (12, 8, 30, 20)
    xs, ys = np.array(s.polygon).T
    assert abs(xs.min() - 11.5) < 1.1 and abs(xs.max() - 29.5) < 1.1


# ----------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------

def test_colorize_blend_resize():
    m = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    c = colorize(m, "jet")
    assert c.shape == (3, 4, 3) and c.dtype == np.uint8
    assert not np.array_equal(c[0, 0], c[-1, -1])
    f = np.full((3, 4, 3), 100, np.uint8)
    assert np.array_equal(blend(f, m, alpha=0.0), f)
    assert np.array_equal(blend(f, m, alpha=1.0), c)
    assert blend(np.zeros((9, 12, 3), np.uint8), m).shape == (9, 12, 3)    # map resized to frame
    r = resize_maps(np.stack([m, m]), (6, 8))
    assert r.shape == (2, 6, 8) and r.min() >= 0 and r.max() <= 1
    assert r[0, 0, 0] == pytest.approx(0) and r[0, -1, -1] == pytest.approx(1)


def test_resize_maps_and_images_match_bilinear_reference():
    from xvad.render import resize_images

    rng = np.random.default_rng(6)
    maps = rng.random((3, 7, 11)).astype(np.float32)
    for size in ((14, 22), (5, 4), (7, 30)):
        np.testing.assert_allclose(resize_maps(maps, size), bilinear_resize(maps, size), atol=1e-5)
    img = rng.integers(0, 256, (2, 9, 13, 3), dtype=np.uint8)
    want = bilinear_resize(np.moveaxis(img, -1, 1).astype(float), (18, 26))
    got = np.moveaxis(resize_images(img, (18, 26)), -1, 1).astype(float)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1.0   # 8-bit fixed point


def test_blurs_match_explicit_sums():
    from xvad.explain.base import gaussian_blur
    from xvad.render import smooth

    rng = np.random.default_rng(7)
    m = rng.random((2, 20, 30)).astype(np.float32)
    np.testing.assert_allclose(smooth(m, 2.4), gaussian_reference(m, 2.4, 7), rtol=1e-5, atol=1e-6)
    x = torch.from_numpy(rng.random((1, 2, 3, 16, 24))).to(torch.float64)
    got = gaussian_blur(x, 1.6)
    assert got.dtype == torch.float64 and got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), gaussian_reference(x.numpy(), 1.6, 5), rtol=1e-6, atol=1e-9)


def test_draw_polygons_and_boxes():
    img = np.zeros((40, 40, 3), np.uint8)
    square = [(10, 10), (30, 10), (30, 30), (10, 30)]
    draw_polygons(img, [square], colour=(255, 0, 0), thickness=1, outline=None)
    assert (img[10, 10:31] == (255, 0, 0)).all() and (img[10:31, 30] == (255, 0, 0)).all()
    assert (img[20, 20] == 0).all() and (img[5, 5] == 0).all()
    img2 = np.zeros((40, 40, 3), np.uint8)
    draw_boxes(img2, [(5, 6, 15, 20)], colour=(0, 255, 0), thickness=1)
    assert (img2[6, 5:15] == (0, 255, 0)).all() and (img2[6:20, 14] == (0, 255, 0)).all()
    assert (img2[20, 5:15] == 0).all()                 # x1, y1 exclusive
    img3 = np.zeros((60, 60, 3), np.uint8)
    draw_polygons(img3, clip_contours(blob_clip().maps[:1, :40, :40])[0], thickness=2)
    assert (img3 == 255).all(-1).sum() > 20


def test_draw_text_and_importance_strip():
    img = np.full((60, 200, 3), 128, np.uint8)
    draw_text(img, "anomaly p=0.93", (2, 2), size=14)
    changed = (img != 128).any(-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 100 and ys.min() >= 2 and xs.min() >= 2 and ys.max() < 40
    assert (img == 255).all(-1).sum() > 20               # white glyph pixels
    long, short = np.zeros((30, 60, 3), np.uint8), np.zeros((30, 60, 3), np.uint8)
    draw_text(long, "a rather long line of text for this image", (0, 0))   # too wide: a smaller font
    draw_text(short, "ab", (0, 0))                                          # fits: the default font
    height = [int((im != 0).any((1, 2)).sum()) for im in (long, short)]     # of each text's box
    assert 0 < height[0] < height[1]
    s = importance_strip([0.1, 1.0, 0.5, 0.0], 2, 80, 20)
    assert s.shape == (20, 80, 3)
    def col(i):    # bar height of frame i
        return (s[:, i * 20 + 5] != s[0, 0]).all(-1).sum()

    assert col(1) > col(2) > col(0) > 0


# ----------------------------------------------------------------------------------------------
# video and pictures
# ----------------------------------------------------------------------------------------------

def decode(path):
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("h,w", [(48, 64), (47, 61)])
def test_write_video_decodes(tmp_path, h, w):
    frames = np.zeros((5, h, w, 3), np.uint8)
    frames[:, :, : w // 2] = (200, 40, 40)
    path = write_video(str(tmp_path / "v.mp4"), frames, fps=8.0)
    assert os.listdir(tmp_path) == ["v.mp4"]
    got = decode(path)
    assert got.shape == (5, h + h % 2, w + w % 2, 3)
    assert np.abs(got[:, :h, :w].astype(int) - frames).mean() < 6


def test_overlay_frames_video_odd_size(tmp_path):
    T, h, w = 4, 121, 163
    e = blob_clip(T, 40, 54)                          # maps smaller than the frames: resized
    out = overlay_frames(frames_like(T, h, w), e, min_side=0, timestamps=[0, 0.1, 0.2, 0.3])
    assert out.shape[0] == T and out.shape[2] == w and out.shape[1] > h   # header and strip added
    assert out.dtype == np.uint8
    got = decode(write_video(str(tmp_path / "o.mp4"), out, fps=4))
    assert got.shape == (T, out.shape[1] + out.shape[1] % 2, w + 1, 3)
    small = overlay_frames(frames_like(T, 40, 54), e, importance=False)   # enlarged for legibility
    assert small.shape[2] == 54 * 6 and 40 * 6 < small.shape[1] < 40 * 6 + 40    # + header bar
    with pytest.raises(ValueError):
        overlay_frames(frames_like(T + 1, 40, 54), e)


def test_contact_sheet_png(tmp_path):
    T = 20                                            # more than 16 frames: subsampled
    e1 = blob_clip(T, 32, 40, "gradcam")
    e2 = blob_clip(T, 32, 40, "saliency")
    e2.maps = e2.maps ** 0.5
    path = contact_sheet(frames_like(T, 32, 40), [e1, e2], str(tmp_path / "sheet.png"),
                         timestamps=np.arange(T) / 8, cell=1.0, dpi=80)
    assert os.listdir(tmp_path) == ["sheet.png"]
    img = mpimg.imread(path)
    cols = len(frame_subsample(T))
    assert cols == 16 and frame_subsample(T)[[0, -1]].tolist() == [0, T - 1]
    width = (0.40 + 0.10 + cols * 1.0 + (cols - 1) * 0.06) * 80
    height = (0.55 + 0.10 + 3 * (1.0 * 32 / 40 + 0.30)) * 80
    assert abs(img.shape[1] - width) <= 3 and abs(img.shape[0] - height) <= 3
    assert img[..., :3].std() > 0.05                  # not blank


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------

def test_save_maps_and_json_round_trip(tmp_path):
    e = blob_clip()
    p = save_maps(str(tmp_path / "maps.npz"), {"gradcam": e})
    with np.load(p) as z:
        assert sorted(z.files) == ["gradcam_frame_importance", "gradcam_maps", "gradcam_raw"]
        assert np.array_equal(z["gradcam_maps"], e.maps)
        assert np.array_equal(z["gradcam_raw"], e.raw)
    payload = {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), "d": (1, 2),
               "e": {1: np.bool_(True)}, "f": object}
    q = write_json(str(tmp_path / "x.json"), payload)
    back = json.load(open(q))
    assert back["a"] == 0.5 and back["b"] == [0, 1, 2] and back["c"] is None
    assert back["d"] == [1, 2] and back["e"] == {"1": True} and isinstance(back["f"], str)
    assert back == json_safe(payload)
    assert sorted(os.listdir(tmp_path)) == ["maps.npz", "x.json"]


def test_explanation_record():
    e = blob_clip()
    regions = clip_contours(e)
    rec = json.loads(json.dumps(explanation_record(e, regions, contour={"mode": "top", "q": 10})))
    assert rec["method"] == "gradcam" and rec["score"] == pytest.approx(0.87)
    assert rec["target"] == 1 and rec["class_name"] == "anomaly"
    assert rec["options"] == {"layer": "features.3", "steps": 8}
    assert rec["frame_importance"] == pytest.approx(e.frame_importance.tolist(), abs=1e-6)
    assert len(rec["contours"]) == len(e.maps)
    assert rec["contours"][0][0]["box"] == list(regions[0][0].box)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as part:
            open(part, "wb").write(b"half")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError):
        write_video(str(tmp_path / "v.mp4"), np.zeros((0, 8, 8, 3), np.uint8))
    assert os.listdir(tmp_path) == []


def test_write_explanation_outputs(tmp_path):
    T = 6
    e1, e2 = blob_clip(T, 48, 64, "gradcam"), blob_clip(T, 48, 64, "saliency")
    e2.frame_importance = e2.frame_importance[::-1].copy()
    frames = frames_like(T, 48, 64)
    paths = write_explanation_outputs(str(tmp_path / "out"), frames, {"gradcam": e1, "saliency": e2},
                                      fps=6.0, timestamps=np.arange(T) / 6, source="clip.mp4")
    assert set(paths) == {"overlay_gradcam", "overlay_saliency", "contact_sheet", "maps", "json"}
    files = sorted(os.listdir(tmp_path / "out"))
    assert files == ["contact_sheet.png", "explanation.json", "maps.npz", "overlay_gradcam.mp4",
                     "overlay_saliency.mp4"]
    assert decode(paths["overlay_gradcam"]).shape[0] == T
    doc = json.load(open(paths["json"]))
    assert doc["source"] == "clip.mp4" and doc["target"] == 1 and doc["class_name"] == "anomaly"
    assert doc["score"] == pytest.approx(0.87)
    assert set(doc["methods"]) == {"gradcam", "saliency"}
    rec = doc["methods"]["saliency"]
    assert rec["frame_importance"] == pytest.approx(e2.frame_importance.tolist(), abs=1e-6)
    assert len(rec["contours"]) == T and rec["contour"]["mode"] == "top"
    poly = rec["contours"][3][0]["polygon"]
    assert point_in_polygon(14 + 5 * 3, 20, poly)
    with np.load(paths["maps"]) as z:
        assert "saliency_maps" in z.files and z["saliency_maps"].shape == (T, 48, 64)
        np.testing.assert_array_equal(z["saliency_maps"], e2.maps)
        np.testing.assert_array_equal(z["gradcam_frame_importance"], e1.frame_importance)


def test_smooth_matches_a_hand_computed_gaussian():
    from xvad.render import smooth

    m = np.zeros((1, 9, 9), np.float32)
    m[0, 4, 4] = 1.0
    out = smooth(m, 1.0)
    k = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    k /= k.sum()
    np.testing.assert_allclose(out[0, 1:8, 1:8], np.outer(k, k), rtol=1e-5)
    assert abs(out.sum() - 1.0) < 1e-5
    np.testing.assert_array_equal(smooth(m, 0), m)                          # no blur at sigma 0
