"""The motion-guided crop: each frame's square from the motion of its last frames (xvad.video.crop),
checked against hand-made scenes and a brute-force search."""
from __future__ import annotations

import numpy as np
import pytest

from xvad.video.crop import (
    MOTION_HISTORY,
    MotionCrop,
    Region,
    best_square,
    fixed_region,
    grid_shape,
    motion_regions,
    motion_square,
    moving_cells,
    square_sides,
)


def scene(h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    """A textured still background (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 200, (h, w, 3), dtype=np.uint8)


def with_block(frame: np.ndarray, top: int, left: int, side: int, value: int = 255) -> np.ndarray:
    out = frame.copy()
    out[top:top + side, left:left + side] = value
    return out


def test_fixed_regions_by_hand():
    # centre crop of a 640x360 frame: the 360 x 360 square in the middle (140 px each side), to a pixel
    r = fixed_region(360, 640, 192, "center")
    assert abs(r.top) <= 1 and abs(r.left - 140) <= 1 and abs(r.height - 360) <= 1 and abs(r.width - 360) <= 1
    assert fixed_region(360, 640, 192, "full") == Region(0, 0, 360, 640)
    p = fixed_region(360, 640, 192, "pad")          # letterboxed: the square reaches past the frame
    assert p.left == 0 and p.width == 640 and p.height == 640 and p.top == -140


def test_sides_grow_from_the_input_to_the_short_side():
    assert square_sides(1080, 1920, 192) == [round(192 * (1080 / 192) ** (k / 5)) for k in range(6)]
    assert square_sides(240, 320, 192)[0] == 192 and square_sides(240, 320, 192)[-1] == 240
    assert square_sides(100, 200, 192) == [100]     # a frame smaller than the input: its short side


def test_best_square_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        energy = (rng.random((30, 50)) ** 6).astype(np.float32)
        rows, cols = int(rng.integers(1, 30)), int(rng.integers(1, 50))
        top, left, held = best_square(energy, rows, cols)
        sums = np.array([[energy[i:i + rows, j:j + cols].sum() for j in range(50 - cols + 1)]
                         for i in range(30 - rows + 1)])
        assert held == pytest.approx(float(sums.max()), rel=1e-5)
        assert energy[top:top + rows, left:left + cols].sum() == pytest.approx(float(sums.max()), rel=1e-5)


def test_moving_cells_counts_changed_pixels():
    a = scene()
    b = with_block(a, 100, 200, 30)                 # 900 pixels change
    assert grid_shape(360, 640) == (120, 213)       # cells of about 640 / 240 pixels
    cells = moving_cells(a, b, (120, 213))
    assert cells.shape == (120, 213) and cells.dtype == np.uint8
    assert cells.sum() / 255 * (360 / 120) * (640 / 213) == pytest.approx(900, rel=0.02)
    assert moving_cells(a, a, (120, 213)).sum() == 0


@pytest.mark.parametrize("height,width", [(360, 640), (720, 1280), (1080, 1920), (702, 1280), (240, 320)])
def test_the_square_centres_on_what_moved_at_any_frame_size(height, width):
    """A block moving in the bottom right-hand part of frames of sizes that the grid's cells do not
    divide evenly: the chosen square is centred on the block to within a cell."""
    base = scene(height, width)
    side = height // 8
    top, left = height - 2 * side, width - 3 * side
    r = MotionCrop(192).push(base, with_block(base, top, left, side))
    cell = max(height / grid_shape(height, width)[0], width / grid_shape(height, width)[1])
    if r.width > 192 or left + side / 2 + 96 < width:     # not pushed against the frame's edge
        assert r.left + r.width / 2 == pytest.approx(left + side / 2, abs=cell + 1)
    assert r.top <= top and r.top + r.height >= top + side and r.left <= left and r.left + r.width >= left + side


def test_a_fight_at_the_edge_is_inside_its_square():
    """Something moving near the left edge of a wide frame (outside the centre crop) gets the smallest
    square, which holds it; the centre crop would not."""
    base = scene()
    frames = [with_block(base, 150, 20 + 2 * k, 40) for k in range(8)]
    partners = [with_block(base, 150, 22 + 2 * k, 40) for k in range(8)]
    regions = motion_regions(np.stack(frames), np.stack(partners), 192)
    r = regions[-1]
    assert r.height == r.width == 192
    assert r.left <= 20 and r.left + r.width >= 20 + 2 * 7 + 42          # the block's span over the clip
    assert r.top <= 150 and r.top + r.height >= 190
    centre = fixed_region(360, 640, 192, "center")
    assert centre.left > 60                                                # the centre crop misses it


def test_long_motion_then_stillness_gives_the_centre_crop_again():
    """The history's sum is kept exactly: after many frames of motion and then a full history of still
    frames, nothing is left of it and the frame gets the centre square."""
    base = scene()
    crop = MotionCrop(192)
    rng = np.random.default_rng(3)
    for k in range(50):
        crop.push(base, with_block(base, int(rng.integers(0, 300)), int(rng.integers(0, 580)), 40, k % 255))
    for _ in range(MOTION_HISTORY):
        still = crop.push(base, base)
    assert still == Region(0, 140, 360, 360)


def test_still_frames_get_the_centre_crop_and_motion_fades_after_the_history():
    base = scene()
    crop = MotionCrop(192)
    assert crop.push(base, base) == Region(0, 140, 360, 360)      # nothing moved: the centre square
    moved = crop.push(base, with_block(base, 10, 500, 30))
    assert moved.width == 192 and moved.left + 192 >= 530 and moved.top <= 10
    for _ in range(MOTION_HISTORY - 1):
        assert crop.push(base, base) == moved                     # still in the history
    assert crop.push(base, base) == Region(0, 140, 360, 360)      # out of it


def test_spread_motion_takes_a_larger_square():
    base = scene()
    partner = with_block(with_block(base, 20, 10, 30), 300, 590, 30)    # two far corners move alike
    r = motion_square(moving_cells(base, partner, (120, 213)).astype(np.float32), 360, 640, 192)
    assert r.width == r.height == 360                              # no smaller square holds two thirds


def test_a_stream_chooses_what_the_file_chooses():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (20, 120, 200, 3), dtype=np.uint8)
    partners = np.clip(frames.astype(int) + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
    crop = MotionCrop(64)
    assert [crop.push(f, p) for f, p in zip(frames, partners)] == motion_regions(frames, partners, 64)


def test_a_new_frame_size_starts_over():
    crop = MotionCrop(64)
    small = scene(120, 160)
    crop.push(small, with_block(small, 0, 0, 20))
    big = scene(240, 320)
    assert crop.push(big, big) == Region(0, 40, 240, 240)         # no motion carried over
