import pytest
import torch

from mnist_ops.augment import (perspective_matrices, random_perspective_points, rotation_matrices,
                               seed_augment, warp)


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


def test_each_sample_gets_its_own_parameters_and_draws_are_repeatable():
    images = batch(1).expand(16, 1, 28, 28).contiguous()
    first = seed_augment(images, fill=0.13, generator=torch.Generator().manual_seed(3))
    again = seed_augment(images, fill=0.13, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    distinct = {tuple(sample.flatten().tolist()) for sample in first}
    assert len(distinct) == 16


def test_seed_augment_keeps_digits_recognisable():
    """Small angles and distortions move pixels only a little: most of the mass stays."""
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 8:20, 12:16] = 1.0  # a vertical bar through the centre
    out = seed_augment(images, fill=0.0, generator=torch.Generator().manual_seed(0))
    overlap = (out * images).sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert overlap.min() > 0.4 and overlap.mean() > 0.6
    assert out.shape == images.shape and out.dtype == images.dtype


def test_light_augment_is_a_small_rotation_only():
    from mnist_ops.augment import augment_batch

    images = batch(8)
    assert augment_batch("none", images, fill=0.1) is images
    out = augment_batch("light", images, fill=0.1, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    centre_kept = (out[:, :, 12:16, 12:16] == images[:, :, 12:16, 12:16]).float().mean()
    assert centre_kept > 0.5  # within ±7° the centre barely moves
