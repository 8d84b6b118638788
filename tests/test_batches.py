import threading

import pytest
import torch

from mnist_ops.batches import iterate_batches, load_fit_data, prefetched
from mnist_ops.config import Config
from mnist_ops.data import Split
from mnist_ops.errors import UserError


def small_split(count=300):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
    return Split(images=images, labels=torch.arange(count) % 10)


@pytest.mark.parametrize("augment", ["seed", "light", "none"])
def test_prefetched_batches_and_random_draws_are_those_of_the_plain_loop(augment):
    split, config = small_split(), Config(augment=augment, batch_size=64)
    plain_generator = torch.Generator().manual_seed(3)
    plain = list(iterate_batches(split, config, 0.13, 0.31, plain_generator))
    generator = torch.Generator().manual_seed(3)
    fetched = list(prefetched(iterate_batches(split, config, 0.13, 0.31, generator)))
    assert len(fetched) == len(plain) == 5  # 4 of 64 and one of 44
    for (x, y), (x_plain, y_plain) in zip(fetched, plain):
        assert torch.equal(x, x_plain) and torch.equal(y, y_plain)
    assert torch.equal(generator.get_state(), plain_generator.get_state())  # a resumed run draws the same next


def test_prefetching_builds_in_another_thread_and_passes_errors_through():
    built_in = []

    def batches():
        for number in range(3):
            built_in.append(threading.current_thread().name)
            if number == 2:
                raise ValueError("damaged batch")
            yield number

    seen = []
    with pytest.raises(ValueError, match="damaged batch"):
        for number in prefetched(batches()):
            seen.append(number)
    assert seen == [0, 1]
    assert all(name.startswith("prefetch") for name in built_in)


def test_without_prefetching_the_batches_are_built_in_the_callers_thread():
    names = []

    def batches():
        names.append(threading.current_thread().name)
        yield 1

    assert list(prefetched(batches(), enabled=False)) == [1]
    assert names == [threading.current_thread().name]


def test_random_crops_are_windows_of_their_own_images_at_drawn_positions_that_cover_every_offset():
    from mnist_ops.batches import random_crop

    images = torch.arange(400 * 2 * 6 * 7, dtype=torch.float32).reshape(400, 2, 6, 7)
    crops = random_crop(images, 4, torch.Generator().manual_seed(1))
    assert crops.shape == (400, 2, 4, 4)
    offsets = set()
    for image, crop in zip(images, crops):
        top, left = divmod(int(crop[0, 0, 0] - image[0, 0, 0]), 7)
        assert torch.equal(crop, image[:, top:top + 4, left:left + 4])  # a window, every channel alike
        offsets.add((top, left))
    assert offsets == {(top, left) for top in range(3) for left in range(4)}  # every position can be drawn
    again = random_crop(images, 4, torch.Generator().manual_seed(1))
    assert torch.equal(again, crops)


def test_train_crop_batches_are_crops_of_the_augmented_batches_drawn_after_them():
    split = small_split()
    whole = list(iterate_batches(split, Config(augment="seed", batch_size=64), 0.13, 0.31,
                                 torch.Generator().manual_seed(3)))
    cropped = list(iterate_batches(split, Config(augment="seed", batch_size=64, train_crop=24), 0.13, 0.31,
                                   torch.Generator().manual_seed(3)))
    (x_whole, y_whole), (x_crop, y_crop) = whole[0], cropped[0]  # the first batch: the same draws up to its crop
    assert x_crop.shape == (64, 1, 24, 24) and torch.equal(y_crop, y_whole)
    for image, crop in zip(x_whole, x_crop):
        assert any(torch.equal(crop, image[:, top:top + 24, left:left + 24]) for top in range(5) for left in range(5))


def test_training_images_of_one_pixel_value_are_refused_before_training(tmp_path):
    """Normalizing divides by the pixel std: at 0 every loss is NaN, which would read like a too-high lr."""
    from mnist_ops.idx import write_idx

    for name, tensor in (("train-images-idx3-ubyte", torch.zeros(6, 28, 28, dtype=torch.uint8)),
                         ("train-labels-idx1-ubyte", torch.tensor([0, 1, 0, 1, 0, 1], dtype=torch.uint8)),
                         ("t10k-images-idx3-ubyte", torch.full((2, 28, 28), 9, dtype=torch.uint8)),
                         ("t10k-labels-idx1-ubyte", torch.tensor([0, 1], dtype=torch.uint8))):
        write_idx(tmp_path / name, tensor)
    with pytest.raises(UserError, match=r"every training pixel has the same value \(pixel std 0\)"):
        load_fit_data(Config(dataset=str(tmp_path)), data_root=tmp_path / "root")  # its stats cache there


@pytest.mark.parametrize("validation_from", ["random", "last"])
def test_the_validation_split_holds_out_n_images_random_by_class_or_the_last_in_file_order(tmp_path, validation_from):
    from mnist_ops.idx import write_idx

    images = torch.arange(100, dtype=torch.uint8)[:, None, None].expand(100, 28, 28).contiguous()  # image i: value i
    labels = (torch.arange(100) % 4).to(torch.uint8)
    for name, tensor in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                         ("t10k-images-idx3-ubyte", images[:8]), ("t10k-labels-idx1-ubyte", labels[:8])):
        write_idx(tmp_path / name, tensor)
    config = Config(dataset=str(tmp_path), validation=20, validation_from=validation_from)
    data = load_fit_data(config, data_root=tmp_path / "root")
    held, trained = data.evaluation.images[:, 0, 0].tolist(), data.train.images[:, 0, 0].tolist()
    assert sorted(held + trained) == list(range(100)) and data.evaluation_name == "val"
    if validation_from == "last":
        assert held == list(range(80, 100))
    else:
        assert held != list(range(80, 100)) and torch.bincount(data.evaluation.labels.long()).tolist() == [5] * 4
    assert data.mean == pytest.approx(float(data.train.images.float().mean() / 255))  # the trained images' statistics


def test_holding_out_the_last_images_of_a_file_sorted_by_class_is_refused():
    from mnist_ops.batches import last_holdout

    with pytest.raises(UserError, match=r"holds out no image of class\(es\) 0, 1: the training file is in class order"):
        last_holdout(torch.arange(30) // 10, 8)  # classes 0, 1, 2 in blocks of 10: the last 8 are all 2s
    assert last_holdout(torch.arange(30) % 3, 8)[1].tolist() == list(range(22, 30))


def test_validation_from_without_a_validation_split_is_refused():
    from mnist_ops.config import check_combination

    with pytest.raises(UserError, match=r"validation_from = 'last' picks which images validation holds out, and "
                                        r"validation is 0; set validation = N"):
        check_combination(Config(validation_from="last"))


@pytest.mark.parametrize("augment", ["seed", "light", "elastic"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_a_rotation_fills_what_it_uncovers_with_the_mean_or_with_the_background(augment, interpolation):
    """rotation_fill "zero" gives the uncovered corners the black background's value, as the seed's torchvision
    pipeline did (it truncates the float fill of an 8-bit image to 0); "mean" gives them the mean's, gray."""
    blank = Split(images=torch.zeros(64, 28, 28, dtype=torch.uint8), labels=torch.arange(64) % 10)
    mean, std = 0.1307, 0.3081
    background = (0.0 - mean) / std
    config = Config(augment=augment, interpolation=interpolation, batch_size=64)
    zero, = iterate_batches(blank, config.replace(rotation_fill="zero"), mean, std, torch.Generator().manual_seed(1))
    gray, = iterate_batches(blank, config, mean, std, torch.Generator().manual_seed(1))
    assert torch.allclose(zero[0], torch.full_like(zero[0], background), atol=1e-6)  # no trace of a rotation left
    assert (gray[0].abs() < 1e-6).sum() > 64  # uncovered pixels read the mean, standardized: 0 (gray)
    assert gray[0].min() >= background - 1e-6 and gray[0].max() <= 1e-6  # blends of the two at most
