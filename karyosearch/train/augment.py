"""Training images: loaded and prepared once (the same `load` / `prepare` as indexing and
querying), kept in memory as uint8, and augmented per batch by one affine warp, so the CPU
cores spend their time in the network, not in data loading.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.image import load, prepare_input
from .recipe import Recipe


def load_all(paths: list[str], progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Load (read, one polarity, crop to content) every image on two threads."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        crops = []
        for n, crop in enumerate(pool.map(load, paths)):
            crops.append(crop)
            if progress is not None and n % 256 == 255:
                progress(256)
    return crops


def canvas_for(crops: list[np.ndarray], percentile: float) -> int:
    """The fixed-scale canvas side (source px): a percentile of the crops' long sides."""
    if percentile <= 0 or not crops:
        return 0
    return int(math.ceil(np.percentile([max(c.shape) for c in crops], percentile)))


def prepare_all(crops: list[np.ndarray], size: int, canvas: int = 0) -> np.ndarray:
    """Prepare loaded crops into one uint8 array, (N, S, S) or (N, 2, S, S) with a canvas
    (quantised to save memory)."""
    shape = (2, size, size) if canvas else (size, size)
    out = np.zeros((len(crops), *shape), np.uint8)
    for i, crop in enumerate(crops):
        out[i] = np.round(prepare_input(crop, size, canvas) * 255.0)
    return out


def source_scale(crops: list[np.ndarray], size: int) -> np.ndarray:
    """Each prepared crop's input px per source px (`prepare` maps the longer of the crop's
    sides onto `size`), float32 (N,). With a canvas this is the full view's (channel 0, the
    band detail); its fixed-scale view gets the same blur, more in its own pixels."""
    return np.array([size / max(c.shape) for c in crops], np.float32)


def augment(
    x: torch.Tensor, recipe: Recipe, gen: torch.Generator, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Random rotation, zoom, shift, flips, a lower resolution, blur, JPEG, a scanner's gamma
    and intensity jitter for a batch (N, C, S, S). `scale`: each image's input px per source
    px (`source_scale`), for `lowres`, `blur` and `jpeg`; 1 when not given."""
    n, _, size, _ = x.shape
    if recipe.pad_crop:
        p = recipe.pad_crop
        padded = F.pad(x, (p, p, p, p))
        ij = torch.randint(0, 2 * p + 1, (n, 2), generator=gen)
        x = torch.stack(
            [padded[k, :, i : i + size, j : j + size] for k, (i, j) in enumerate(ij.tolist())]
        )
    if (
        recipe.rotate
        or recipe.scale != (1.0, 1.0)
        or recipe.translate
        or recipe.flips
        or recipe.vertical_flips
    ):
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(recipe.rotate)
        lo, hi = recipe.scale
        zoom = lo + (hi - lo) * torch.rand(n, generator=gen)
        sx = (
            torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            if recipe.flips
            else torch.ones(n)
        )
        sy = (
            torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            if recipe.vertical_flips
            else torch.ones(n)
        )
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * recipe.translate * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, shift[:, 0]], 1),
                torch.stack([sin * sx, cos * sy, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if recipe.resample:
        x = resample(x, recipe.resample, gen)
    if recipe.lowres or recipe.blur or recipe.jpeg:
        per_px = torch.ones(n) if scale is None else scale.float()
        if recipe.lowres:
            x = resample(x, recipe.lowres, gen, sides=size / per_px)
        if recipe.blur:
            x = blur(x, recipe.blur * per_px, gen)
        if recipe.jpeg:
            x = jpeg(x, recipe.jpeg, gen, sides=size / per_px)
    if recipe.scan_gamma:
        g = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * recipe.scan_gamma)
        flip = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
        x = x.clamp(0, 1)
        x = torch.where(flip, 1 - (1 - x) ** g, x**g)
    if recipe.intensity:
        gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * recipe.intensity)
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * recipe.intensity
        x = (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)
    return x


def resample(
    x: torch.Tensor, smallest: float, gen: torch.Generator, sides: torch.Tensor | None = None
) -> torch.Tensor:
    """Half the images (at random) shrunk by a random factor in [smallest, 1] (antialiased)
    and enlarged back to their side: the detail a lower-resolution scan lacks. `sides`: the
    side (px) each image's detail has now, its source's; the input side S when not given."""
    n, _, size, _ = x.shape
    chosen = torch.rand(n, generator=gen) < 0.5
    factors = smallest + (1 - smallest) * torch.rand(n, generator=gen)
    out = x.clone()
    for k in chosen.nonzero().flatten().tolist():
        base = size if sides is None else float(sides[k])
        side = min(size, max(4, round(base * float(factors[k]))))
        small = F.interpolate(x[k : k + 1], size=(side, side), mode="bilinear", antialias=True)
        out[k : k + 1] = F.interpolate(small, size=(size, size), mode="bilinear")
    return out


def jpeg(x: torch.Tensor, lowest: int, gen: torch.Generator, sides: torch.Tensor) -> torch.Tensor:
    """Half the images (at random) saved as JPEG at a quality uniform in [lowest, 95] and read
    back, at their source's side `sides[k]` (px; brought there and back by bilinear
    resampling), so the 8x8 blocks are the source's as in another lab's JPEG files."""
    n, c, size, _ = x.shape
    chosen = torch.rand(n, generator=gen) < 0.5
    quality = torch.randint(lowest, 96, (n,), generator=gen)
    out = x.clone()
    for k in chosen.nonzero().flatten().tolist():
        side = min(size, max(8, round(float(sides[k]))))
        small = F.interpolate(x[k : k + 1], size=(side, side), mode="bilinear", antialias=True)
        grey = (small[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        for ch in range(c):
            buf = io.BytesIO()
            Image.fromarray(grey[ch]).save(buf, format="JPEG", quality=int(quality[k]))
            grey[ch] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
        back = torch.from_numpy(grey.astype(np.float32) / 255.0)[None]
        out[k : k + 1] = F.interpolate(back, size=(size, size), mode="bilinear").clamp(0, 1)
    return out


def blur(x: torch.Tensor, largest: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half the images (at random) blurred by a Gaussian of sigma uniform in [0, largest[k]]
    input px (background stays 0 at the edges), then brought back to the pipeline's contrast
    (the 99th percentile of the chromosome's pixels at 1), as `prepare` does for a blurred
    scan."""
    n, c, size, _ = x.shape
    chosen = torch.rand(n, generator=gen) < 0.5
    sigma = largest * torch.rand(n, generator=gen)
    ix = (chosen & (sigma > 0.1)).nonzero().flatten()
    if not len(ix):
        return x
    s = sigma[ix]
    radius = min(size - 1, math.ceil(3 * float(s.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t[None, :] / s[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
    m = len(ix) * c
    sub = x[ix].reshape(1, m, size, size)
    sub = F.conv2d(F.pad(sub, (radius, radius, 0, 0)), kernel[:, None, None, :], groups=m)
    sub = F.conv2d(F.pad(sub, (0, 0, radius, radius)), kernel[:, None, :, None], groups=m)
    sub = sub.reshape(len(ix) * c, size * size)
    content = sub.masked_fill(sub <= 1 / 255, float("nan"))  # the chromosome's pixels only
    top = torch.nanquantile(content, 0.99, dim=1).nan_to_num(1.0).clamp_min(1 / 255)
    out = x.clone()
    out[ix] = (sub / top[:, None]).clamp(0, 1).reshape(len(ix), c, size, size)
    return out
