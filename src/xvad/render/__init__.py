"""Pictures and files for explanations: contours of high-attribution regions, heatmap overlays,
the overlay video, the contact sheet, and the ``maps.npz`` / ``explanation.json`` outputs.

Explanations are duck-typed: anything with ``maps [T, H, W]`` (and optionally ``raw``,
``frame_importance``, ``score``, ``target``, ``method``, ``options``, ``class_name``) works.
"""
from .contours import (
                       Region,
                       clip_contours,
                       find_regions,
                       label,
                       point_in_polygon,
                       points_in_polygon,
                       polygon_area,
                       smooth,
)
from .files import atomic_path, explanation_record, save_maps
from .image import gaussian_blur, resize_images, resize_maps
from .outputs import write_explanation_outputs, write_video
from .overlay import (
                       as_rgb_frames,
                       blend,
                       colorize,
                       draw_boxes,
                       draw_polygons,
                       draw_polyline,
                       draw_text,
                       importance_strip,
                       overlay_frames,
                       text_size,
)
from .sheet import contact_sheet, frame_subsample
from .threshold import MODES, otsu_level, threshold
from .video_writer import VideoWriter

__all__ = [
    "Region", "clip_contours", "find_regions", "label", "otsu_level", "point_in_polygon",
    "points_in_polygon", "polygon_area", "smooth", "threshold", "MODES",
    "atomic_path", "explanation_record", "save_maps",
    "write_explanation_outputs",
    "as_rgb_frames", "blend", "colorize", "draw_boxes", "draw_polygons", "draw_polyline",
    "draw_text", "importance_strip", "overlay_frames", "resize_images", "resize_maps",
    "text_size", "write_video", "gaussian_blur",
    "contact_sheet", "frame_subsample", "VideoWriter",
]
