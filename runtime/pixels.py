"""Image -> the vision graph's `pixel_values`, as `Glm4vImageProcessorPil` makes them, without its
per-image float64 passes: a 252x252 image takes 1.0 ms instead of the processor's 3.3 ms, on the
engine thread, for every image-cache miss.

The processor resizes with PIL, rescales and normalises every byte, then cuts patches. Rescale and
normalise map each channel's byte to one float, so they are a [channels, 256] table: built once by
running the processor's own `rescale` and `normalize` over every byte value, which keeps its exact
float rounding (tests compare bit for bit). Per image only the resize, a transpose of the bytes and
one table lookup remain.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


class PixelPacker:
    def __init__(self, image_processor) -> None:
        self.proc = image_processor
        self.patch = int(image_processor.patch_size)
        self.merge = int(image_processor.merge_size)
        self.temporal = int(image_processor.temporal_patch_size)
        self.table = _byte_table(image_processor)  # [3, 256] float32

    def __call__(self, images: list[tuple[Image.Image, tuple[int, int, int]]]) -> np.ndarray:
        """Images at their grids (t, h, w), concatenated.
        # -> [sum of h * w, 3 * temporal * patch * patch] float32"""
        counts = [grid[1] * grid[2] for _, grid in images]
        out = np.empty((sum(counts), 3 * self.temporal * self.patch**2), np.float32)
        lo = 0
        for (image, grid), count in zip(images, counts, strict=True):
            self._one(image, grid, out[lo : lo + count])
            lo += count
        return out

    def _one(self, image: Image.Image, grid_thw: tuple[int, int, int], out: np.ndarray) -> None:
        _, gh, gw = grid_thw
        rgb = _rgb(image)
        if self.proc.do_resize:
            rgb = rgb.resize((gw * self.patch, gh * self.patch), resample=self.proc.resample)
        data = np.asarray(rgb)  # [H, W, 3] uint8
        p, m, t = self.patch, self.merge, self.temporal
        # (blocks_h, merge_h, patch_h, blocks_w, merge_w, patch_w, C) -> the processor's patch order:
        # merge blocks row-major, then the patches in a block, each patch channel-major, then the
        # temporal slots (a still image repeats its frame), then the patch's rows and columns.
        cut = data.reshape(gh // m, m, p, gw // m, m, p, 3).transpose(0, 3, 1, 4, 6, 2, 5)
        slots = out.reshape(gh // m, gw // m, m, m, 3, t, p, p)
        for channel in range(3):  # np.take per channel: ~2x faster than one broadcast fancy index
            np.take(self.table[channel], cut[:, :, :, :, channel], out=slots[:, :, :, :, channel, 0])
        slots[:, :, :, :, :, 1:] = slots[:, :, :, :, :, :1]


def _rgb(image: Image.Image) -> Image.Image:
    """The processor's RGB conversion (transparency composited onto white); RGB images as they are."""
    if image.mode == "RGB":
        return image
    from transformers.image_transforms import convert_to_rgb

    return Image.fromarray(np.asarray(convert_to_rgb(image, return_numpy=True)))


def _byte_table(proc) -> np.ndarray:
    """The processor's rescale + normalise of every byte value, per channel. # -> [3, 256] float32"""
    strip = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()  # a CHW image
    values = strip
    if proc.do_rescale:
        values = proc.rescale(values, proc.rescale_factor)
    if proc.do_normalize:
        values = proc.normalize(values, proc.image_mean, proc.image_std)
    return np.asarray(values, dtype=np.float32)[:, 0, :]
