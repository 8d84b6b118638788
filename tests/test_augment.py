import pytest
import torch

from mnist_ops.augment import (AUGMENTATIONS, augment_batch, elastic_augment, elastic_displacement, seed_augment,
                               perspective_matrices, random_perspective_points, rotation_matrices, warp)


def batch(n=4, size=28, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("angle, turns", [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_fixed_rotation_equals_rot90(angle, turns):
    images = batch()
    rotated = warp(images, rotation_matrices(torch.full((4,), angle), 28, 28))
    assert torch.equal(rotated, torch.rot90(images, turns, dims=(-2, -1)))


def test_perspective_onto_rotated_corners_equals_rot90():
    images = batch(1)
    corners = torch.tensor([[[0.0, 0.0], [28.0, 0.0], [28.0, 28.0], [0.0, 28.0]]])
    turned = corners[:, [3, 0, 1, 2]]  # top-left content goes to bottom-left: counter-clockwise
    warped = warp(images, perspective_matrices(corners, turned))
    assert torch.equal(warped, torch.rot90(images, 1, dims=(-2, -1)))


def test_perspective_with_unmoved_corners_is_identity():
    images = batch()
    start, _ = random_perspective_points(4, 28, 28, 0.2)
    assert torch.equal(warp(images, perspective_matrices(start, start)), images)


def test_perspective_points_stay_within_torchvision_bounds():
    start, end = random_perspective_points(2000, 28, 28, 0.2, torch.Generator().manual_seed(1))
    reach = int(0.2 * 14) + 1  # torchvision draws randint(0, distortion * half + 1)
    assert end.min() >= 0 and end.max() <= 27
    assert (end[:, 0] < reach).all() and (end[:, 2] >= 28 - reach).all()
    assert len(torch.unique(end.reshape(2000, -1), dim=0)) > 1000


def test_rotation_fills_uncovered_pixels_with_fill():
    images = torch.zeros(1, 1, 28, 28)
    rotated = warp(images, rotation_matrices(torch.tensor([45.0]), 28, 28), fill=0.25)
    assert rotated[0, 0, 0, 0] == 0.25 and rotated[0, 0, 14, 14] == 0.0
    assert set(rotated.unique().tolist()) == {0.0, 0.25}


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("kind", sorted(AUGMENTATIONS))
def test_each_sample_gets_its_own_parameters_and_draws_are_repeatable(kind, interpolation):
    images = batch(1).expand(16, 1, 28, 28).contiguous()
    first = augment_batch(kind, images, 0.13, torch.Generator().manual_seed(3), interpolation)
    again = augment_batch(kind, images, 0.13, torch.Generator().manual_seed(3), interpolation)
    assert torch.equal(first, again)
    distinct = {tuple(sample.flatten().tolist()) for sample in first}
    # 'light' with nearest: angles within a degree or so of each other can copy the same pixels
    assert len(distinct) >= (12 if (kind, interpolation) == ("light", "nearest") else 16)


@pytest.mark.parametrize("fill", [0.1307, 0.0, 0.5])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("kind", ["none", *sorted(AUGMENTATIONS)])
def test_standardizing_inside_the_augmentation_gives_the_bits_of_standardizing_after(kind, interpolation, fill):
    """make_batch asks the augmentation to standardize (a nearest warp then fills the mean with 0, no mask
    channel); every training batch, and so every seeded run, must stay what it was."""
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    images[images < 0.6] = 0.0  # digits are mostly background
    mean, std = 0.1307, 0.3081
    after = augment_batch(kind, images.clone(), fill, torch.Generator().manual_seed(4), interpolation)
    after = after.sub_(mean).div_(std)  # how make_batch standardized before
    inside = augment_batch(kind, images.clone(), fill, torch.Generator().manual_seed(4), interpolation,
                           normalize=(mean, std))
    assert torch.equal(inside.view(torch.int32), after.view(torch.int32))  # bits: -0.0 is not 0.0


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("kind, least, mean", [("seed", 0.4, 0.75), ("elastic", 0.2, 0.55)])
def test_augmentation_keeps_digits_recognisable(kind, least, mean, interpolation):
    """Small angles and distortions move pixels only a little: most of the mass stays. The elastic
    field bends a 4-pixel bar more than a perspective does (about 1.4 px of displacement, std)."""
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 8:20, 12:16] = 1.0  # a vertical bar through the centre
    out = augment_batch(kind, images, 0.0, torch.Generator().manual_seed(0), interpolation)
    overlap = (out * images).sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert overlap.min() > least and overlap.mean() > mean
    assert out.shape == images.shape and out.dtype == images.dtype


def test_bilinear_resampling_blends_where_nearest_copies_pixels():
    images = (batch(4) > 0.5).float()
    turn = rotation_matrices(torch.full((4,), 30.0), 28, 28)
    assert set(warp(images, turn).unique().tolist()) <= {0.0, 1.0}
    blended = warp(images, turn, mode="bilinear")
    assert ((blended > 0.01) & (blended < 0.99)).float().mean() > 0.2
    quarter = rotation_matrices(torch.full((4,), 90.0), 28, 28)  # pixel centres land on pixel centres
    assert torch.allclose(warp(images, quarter, mode="bilinear"), torch.rot90(images, 1, dims=(-2, -1)), atol=1e-5)


def test_a_displacement_moves_the_pixels_read():
    """displacement (x, y) in pixels is added to the position each output pixel reads."""
    images = batch(2)
    right = torch.zeros(2, 2, 28, 28)
    right[:, 0] = 1.0  # every output pixel reads one pixel to its right
    moved = warp(images, torch.eye(3).expand(2, 3, 3), displacement=right)
    assert torch.equal(moved[..., :-1], images[..., 1:]) and (moved[..., -1] == 0).all()
    down = torch.zeros(2, 2, 28, 28)
    down[:, 1] = 2.0
    assert torch.equal(warp(images, torch.eye(3).expand(2, 3, 3), displacement=down)[..., :-2, :], images[..., 2:, :])


def test_the_elastic_field_is_smooth_and_about_as_large_as_simards():
    field = elastic_displacement(256, 28, 28, alpha=34.0, sigma=4.0, generator=torch.Generator().manual_seed(0))
    assert field.shape == (256, 2, 28, 28)
    centre = field[..., 8:20, 8:20]  # away from the zero padding at the border
    # uniform noise (std 1/sqrt(3)) through a unit-sum Gaussian of width sigma keeps 1 / (2 sqrt(pi) sigma) of its std
    expected = 34.0 / 3 ** 0.5 / (2 * torch.pi ** 0.5 * 4.0)
    assert 0.8 * expected < centre.std() < 1.2 * expected
    step = (centre[..., 1:] - centre[..., :-1]).abs().mean()
    assert step < 0.3 * centre.abs().mean()  # neighbours move together: strokes bend, they do not scatter
    assert torch.equal(elastic_displacement(3, 28, 28, 0.0, 4.0), torch.zeros(3, 2, 28, 28))


def test_elastic_with_no_rotation_and_no_field_is_the_identity():
    images = batch(4)
    out = elastic_augment(images, fill=0.2, generator=torch.Generator().manual_seed(0), degrees=0.0, alpha=0.0)
    assert torch.equal(out, images)


def test_light_augment_is_a_small_rotation_only():
    images = batch(8)
    assert augment_batch("none", images, fill=0.1) is images
    out = augment_batch("light", images, fill=0.1, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    centre_kept = (out[:, :, 12:16, 12:16] == images[:, :, 12:16, 12:16]).float().mean()
    assert centre_kept > 0.5  # within ±7° the centre barely moves


def matmul_warp(images, matrices, fill, mode, displacement):
    """warp() as first written: the grid from one broadcast matmul of the pixel centres with the matrices."""
    n, _, height, width = images.shape
    grid_y, grid_x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).reshape(1, -1, 3)
    mapped = points @ matrices.to(torch.float32).transpose(1, 2)
    source = mapped[..., :2] / mapped[..., 2:3]
    if displacement is not None:
        source = source + displacement.permute(0, 2, 3, 1).reshape(n, -1, 2)
    grid = (source / torch.tensor([width / 2.0, height / 2.0]) - 1.0).reshape(n, height, width, 2)
    with_mask = torch.cat([images, torch.ones_like(images[:, :1])], dim=1)
    sampled = torch.nn.functional.grid_sample(with_mask, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return sampled[:, :-1] + fill * (1.0 - sampled[:, -1:])


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("n, height, width", [(1, 28, 28), (7, 28, 28), (256, 28, 28), (5, 20, 33)])
def test_warp_is_bit_identical_to_the_matmul_grid(mode, n, height, width):
    # warp() computes its grid elementwise (2x faster); the augmented images, and so every seeded run
    # from before that change, must stay the same to the bit.
    generator = torch.Generator().manual_seed(n)
    images = torch.rand(n, 1, height, width, generator=generator)
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * 15
    rotation = rotation_matrices(angles, height, width)
    perspective = perspective_matrices(*random_perspective_points(n, height, width, 0.2, generator))
    displacement = elastic_displacement(n, height, width, 34.0, 4.0, generator)
    for matrices in (rotation, perspective, rotation @ perspective):
        for fill in (0.0, 0.1307):
            for moved in (None, displacement):
                assert torch.equal(warp(images, matrices, fill, mode, moved),
                                   matmul_warp(images, matrices, fill, mode, moved))


def seed_augment_as_first_written(images, fill, generator, mode, perspective_p):
    """seed_augment before it warped only the perspective's applied share: every sample through both
    warps, the unapplied ones through an identity matrix."""
    n, _, height, width = images.shape
    start, end = random_perspective_points(n, height, width, 0.2, generator)
    perspective = perspective_matrices(start, end)
    applied = torch.rand(n, generator=generator) < perspective_p
    perspective[~applied] = torch.eye(3, dtype=torch.float64)
    images = matmul_warp(images, perspective, 0.0, mode, None)
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * 15.0
    return matmul_warp(images, rotation_matrices(angles, height, width), fill, mode, None)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("perspective_p", [0.0, 0.5, 1.0])  # none, some, or all of the samples warped
@pytest.mark.parametrize("n, height, width", [(1, 28, 28), (2, 28, 28), (256, 28, 28), (9, 20, 33)])
def test_seed_augment_is_bit_identical_to_warping_every_sample(mode, perspective_p, n, height, width):
    # Samples the perspective skips are no longer warped at all in nearest mode, where an identity
    # warp copies every pixel exactly; the batches, and so every seeded run, stay the same.
    images = torch.rand(n, 1, height, width, generator=torch.Generator().manual_seed(n))
    for seed in range(3):
        assert torch.equal(
            seed_augment(images, 0.1307, torch.Generator().manual_seed(seed), mode=mode, perspective_p=perspective_p),
            seed_augment_as_first_written(images, 0.1307, torch.Generator().manual_seed(seed), mode, perspective_p))
