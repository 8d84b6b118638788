"""Batched augmentation on tensors: every sample gets its own random parameters.

The seed's transforms are projective warps: a 3x3 matrix per sample maps an output pixel
position to the input position it reads (pixel centres at i + 0.5, as torchvision's
tensor `perspective` does), and one `grid_sample` call resamples the whole batch. The elastic
distortion adds a smooth per-pixel displacement to that position, in the same call. Resampling
copies the nearest pixel (torchvision's default) or, with interpolation "bilinear", blends four.
`OMP_NUM_THREADS=1 python benchmarks/augment_speed.py` measures this against a per-image PIL path
as torchvision would take: 33,483 vs 5,644 img/s (5.9x) for the seed's augmentation, on one thread
with nothing else running (docs/benchmarks/augment-speed.json). Before warp() built its grid
elementwise, the same command gave 16,787, 22,415 and 17,595 img/s, alternated with the new code's
42,794, 31,992 and 38,908: 2.2x in the medians. Rotations then skipped their division by a depth of
exactly 1, and the perspective its unapplied samples: 45,926, 40,804 and 37,514 img/s before,
50,942, 55,634 and 54,582 after, alternated (1.34x in the medians;
docs/benchmarks/followup-2026-11-26-afternoon.log).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def warp(images: torch.Tensor, matrices: torch.Tensor, fill: float = 0.0, mode: str = "nearest",
         displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Resample float images [N, C, H, W] through per-sample matrices [N, 3, 3].

    Output pixel (x, y) reads input position `matrices @ (x + .5, y + .5, 1)` (homogeneous), moved by
    `displacement` [N, 2, H, W] pixels (x, y) if given; positions outside the input take `fill`.
    `mode`: grid_sample's "nearest" (torchvision's default, the seed's) or "bilinear".
    """
    n, channels, height, width = images.shape
    ys = (torch.arange(height, dtype=torch.float32, device=images.device) + 0.5)[:, None]
    xs = torch.arange(width, dtype=torch.float32, device=images.device) + 0.5
    m = matrices.to(torch.float32)[:, :, :, None, None]  # [N, 3, 3, 1, 1]

    def row(r: int) -> torch.Tensor:  # [N, H, W]: row r of the matrices times (x, y, 1)
        # x·m0 + y·m1 + m2, multiplied and summed left to right as a matmul of the points (x, y, 1) with
        # the matrices does on CPU, so the grid is bit-identical to that matmul's (tests/test_augment.py).
        return m[:, r, 0] * xs + m[:, r, 1] * ys + m[:, r, 2]

    # Elementwise, written straight into grid_sample's [N, H, W, 2] layout: the seed's augmentation ran
    # 2.2x faster on one thread than with a broadcast batched matmul and a stack (module docstring).
    # An affine matrix (bottom row 0, 0, 1: a rotation) has depth 1 exactly, and x / 1 == x: skip it.
    affine = bool((matrices[:, 2] == matrices.new_tensor([0.0, 0.0, 1.0])).all())
    depth = None if affine else row(2)
    grid = torch.empty(n, height, width, 2, dtype=torch.float32, device=images.device)
    for axis, size in enumerate((width, height)):
        source = row(axis) if affine else row(axis) / depth
        if displacement is not None:
            source += displacement[:, axis]
        torch.sub(source / (size / 2.0), 1.0, out=grid[..., axis])
    if fill == 0.0:
        return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
    # Sample a ones channel alongside to know which output pixels fell outside the input.
    with_mask = torch.cat([images, torch.ones_like(images[:, :1])], dim=1)
    sampled = F.grid_sample(with_mask, grid, mode=mode, padding_mode="zeros", align_corners=False)
    inside = sampled[:, -1:]
    return sampled[:, :-1] + fill * (1.0 - inside)


def standardize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(images - mean) / std, as batches.normalize computes it after the uint8 -> [0, 1] step."""
    return (images - mean).div_(std)


def final_warp(images: torch.Tensor, matrices: torch.Tensor, fill: float, mode: str,
               displacement: torch.Tensor | None = None,
               normalize: tuple[float, float] | None = None) -> torch.Tensor:
    """An augmentation's last resampling (`warp`), filling with `fill`; with normalize = (mean, std), the
    result standardized too.

    A nearest warp copies values, so standardizing before it gives the same bits as after, with the fill
    standardized alike; a fill of the mean (rotation_fill "mean") becomes exactly 0, so warp needs no mask
    channel (a fill of 0, "zero", needs none before standardizing). `batches.make_batch` with the seed's augmentation went from 47,806 to
    63,322 img/s (1.32x; medians of 6 passes over the 60,000 training images in batches of 256, one thread,
    the code before and after alternated in one process, nothing else running; 2026-11-26). Bilinear
    resampling blends values, so it warps first, as before.
    """
    if normalize is None:
        return warp(images, matrices, fill, mode, displacement)
    mean, std = normalize
    if mode == "nearest" and fill != 0.0:  # a fill of 0 needs no mask channel either way: warp first
        fill = standardize(torch.tensor(fill, dtype=torch.float32), mean, std).item()
        return warp(standardize(images, mean, std), matrices, fill, mode, displacement)
    return standardize(warp(images, matrices, fill, mode, displacement), mean, std)


def rotation_matrices(angles_degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Matrices for a counter-clockwise rotation by each angle about the image centre."""
    radians = angles_degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    cx, cy = width / 2.0, height / 2.0
    matrices = torch.zeros(len(radians), 3, 3, dtype=torch.float64)
    # input = R(angle) @ (output - centre) + centre, in x-right / y-down pixel coordinates
    matrices[:, 0, 0], matrices[:, 0, 1] = cos, -sin
    matrices[:, 1, 0], matrices[:, 1, 1] = sin, cos
    matrices[:, 0, 2] = cx - cos * cx + sin * cy
    matrices[:, 1, 2] = cy - sin * cx - cos * cy
    matrices[:, 2, 2] = 1.0
    return matrices


def perspective_matrices(startpoints: torch.Tensor, endpoints: torch.Tensor) -> torch.Tensor:
    """Homographies [N, 3, 3] taking endpoints [N, 4, 2] to startpoints [N, 4, 2].

    Same convention as torchvision's `perspective(img, startpoints, endpoints)`: the image
    content at the start corners moves to the end corners.
    """
    src = endpoints.to(torch.float64)
    dst = startpoints.to(torch.float64)
    n = len(src)
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)  # [N, 8, 8]
    target = torch.cat([u, v], dim=1)  # [N, 8]
    coefficients = torch.linalg.solve(system, target)
    return torch.cat([coefficients, torch.ones(n, 1, dtype=torch.float64)], dim=1).reshape(n, 3, 3)


def random_perspective_points(n: int, height: int, width: int, distortion: float,
                              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner points as torchvision's `RandomPerspective.get_params` draws them, for n samples."""
    half_h, half_w = height // 2, width // 2
    dx, dy = int(distortion * half_w) + 1, int(distortion * half_h) + 1

    def draw(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (n,), generator=generator)

    top_left = torch.stack([draw(0, dx), draw(0, dy)], dim=1)
    top_right = torch.stack([draw(width - dx, width), draw(0, dy)], dim=1)
    bottom_right = torch.stack([draw(width - dx, width), draw(height - dy, height)], dim=1)
    bottom_left = torch.stack([draw(0, dx), draw(height - dy, height)], dim=1)
    end = torch.stack([top_left, top_right, bottom_right, bottom_left], dim=1)
    start = torch.tensor([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]).expand(n, 4, 2)
    return start, end


def seed_augment(images: torch.Tensor, fill: float, generator: torch.Generator | None = None, *,
                 mode: str = "nearest", distortion: float = 0.2, perspective_p: float = 0.5,
                 degrees: float = 15.0, normalize: tuple[float, float] | None = None) -> torch.Tensor:
    """The seed's train pipeline on a float batch in [0, 1] (before normalization):
    RandomPerspective(distortion 0.2, p 0.5, nearest), then RandomRotation(±15°, nearest), filling with `fill`.
    With normalize = (mean, std), the result is standardized too (final_warp).
    """
    n, _, height, width = images.shape
    start, end = random_perspective_points(n, height, width, distortion, generator)
    perspective = perspective_matrices(start, end)
    applied = torch.rand(n, generator=generator) < perspective_p
    if mode == "nearest":  # an identity warp copies each pixel exactly: warp only the applied share
        images = images.clone()
        images[applied] = warp(images[applied], perspective[applied], fill=0.0, mode=mode)
    else:  # bilinear's identity warp moves values by up to ~1e-6: keep every sample's bits as they were
        perspective[~applied] = torch.eye(3, dtype=torch.float64)
        images = warp(images, perspective, fill=0.0, mode=mode)  # torchvision's RandomPerspective fills with 0
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * degrees
    return final_warp(images, rotation_matrices(angles, height, width), fill, mode, normalize=normalize)


def light_augment(images: torch.Tensor, fill: float, generator: torch.Generator | None = None, *,
                  mode: str = "nearest", degrees: float = 7.0,
                  normalize: tuple[float, float] | None = None) -> torch.Tensor:
    """RandomRotation(±7°, nearest) alone, filling with `fill`: the usual recipe for small MNIST nets."""
    n, _, height, width = images.shape
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * degrees
    return final_warp(images, rotation_matrices(angles, height, width), fill, mode, normalize=normalize)


def elastic_displacement(n: int, height: int, width: int, alpha: float, sigma: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Simard et al.'s elastic distortion field [n, 2, H, W] in pixels: uniform noise in [-1, 1] per
    pixel and axis, smoothed by a Gaussian of width sigma (zero beyond the border), times alpha."""
    noise = torch.rand(n, 2, height, width, generator=generator) * 2 - 1
    radius = int(math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    field = F.conv2d(noise, kernel.view(1, 1, 1, -1).expand(2, 1, 1, -1), padding=(0, radius), groups=2)
    field = F.conv2d(field, kernel.view(1, 1, -1, 1).expand(2, 1, -1, 1), padding=(radius, 0), groups=2)
    return field * alpha


def elastic_augment(images: torch.Tensor, fill: float, generator: torch.Generator | None = None, *,
                    mode: str = "nearest", degrees: float = 15.0, alpha: float = 34.0,
                    sigma: float = 4.0, normalize: tuple[float, float] | None = None) -> torch.Tensor:
    """Rotation ±15° (filling with `fill`) and an elastic distortion (alpha 34, sigma 4: Simard, Steinkraus and
    Platt 2003, who found it the distortion that helps MNIST most), in one resampling.

    The field moves pixels by about 1.4 px (std) and is smooth over ~4 px: a stroke bends as another
    writer's would, which a rotation or a perspective, being global, cannot do.
    """
    n, _, height, width = images.shape
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * degrees
    displacement = elastic_displacement(n, height, width, alpha, sigma, generator)
    return final_warp(images, rotation_matrices(angles, height, width), fill, mode, displacement, normalize)


AUGMENTATIONS = {"seed": seed_augment, "light": light_augment, "elastic": elastic_augment}  # "none": nothing


def augment_batch(kind: str, images: torch.Tensor, fill: float, generator: torch.Generator | None = None,
                  interpolation: str = "nearest", normalize: tuple[float, float] | None = None):
    """Apply the named augmentation ("none", "seed", "light" or "elastic") to a float batch in [0, 1],
    resampling with `interpolation` ("nearest" or "bilinear"); with normalize = (mean, std), standardize
    the result: the same bits as standardizing it after, for less work (final_warp)."""
    if kind == "none":
        return images if normalize is None else standardize(images, *normalize)
    return AUGMENTATIONS[kind](images, fill=fill, generator=generator, mode=interpolation, normalize=normalize)
