"""Training augmentations: bounded, seeded, and each does what it says on a probe image."""

from __future__ import annotations

import pytest
import torch

from deploy.augment import Augmentation, max_shift, random_erasing, random_flip, random_shift


def test_random_shift_is_bounded_and_deterministic_for_a_seed() -> None:
    x = torch.zeros(64, 1, 12, 12)
    x[:, 0, 6, 5] = 1.0  # one bright pixel per image: its new place is the shift
    shifted = random_shift(x, 0.25, torch.Generator().manual_seed(3))
    assert max_shift(0.25, 12) == 3
    assert torch.equal(shifted, random_shift(x, 0.25, torch.Generator().manual_seed(3)))
    assert not torch.equal(shifted, random_shift(x, 0.25, torch.Generator().manual_seed(4)))
    rows, cols = (shifted[:, 0].flatten(1).argmax(1) // 12) - 6, (shifted[:, 0].flatten(1).argmax(1) % 12) - 5
    assert shifted.sum((1, 2, 3)).eq(1).all()  # moved, not lost or smeared
    assert rows.abs().max() <= 3 and cols.abs().max() <= 3
    assert rows.abs().max() == 3 and (rows != 0).any() and (cols != 0).any()  # 64 draws cover the range
    assert torch.equal(random_shift(x, 0.05, torch.Generator()), x)  # 0.05 x 12 < 1 pixel: unchanged
    with pytest.raises(ValueError, match="strength must be >= 0"):
        random_shift(x, -0.1, torch.Generator())


def test_shifted_in_pixels_are_zero() -> None:
    shifted = random_shift(torch.ones(32, 2, 8, 8), 0.5, torch.Generator().manual_seed(0))
    kept = shifted.sum((1, 2, 3)) / 2  # pixels of each image still from inside the original
    assert (kept < 64).any() and shifted.unique().tolist() == [0.0, 1.0]


def test_flip_mirrors_a_share_of_images_and_only_left_right() -> None:
    x = torch.arange(400 * 2 * 5 * 6, dtype=torch.float32).reshape(400, 2, 5, 6)
    out = random_flip(x, 0.5, torch.Generator().manual_seed(0))
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(out[~flipped], x[~flipped])
    assert 150 < int(flipped.sum()) < 250  # about half of 400
    assert torch.equal(random_flip(x, 0.0, torch.Generator()), x)
    assert torch.equal(random_flip(x, 1.0, torch.Generator()), x.flip(-1))


def test_erasing_zeros_one_rectangle_of_the_drawn_size() -> None:
    x = torch.ones(300, 3, 16, 16)
    out = random_erasing(x, 0.5, torch.Generator().manual_seed(1))
    zeros = out == 0
    assert torch.equal(zeros[:, :1].expand_as(zeros), zeros)  # every channel erased alike
    erased = zeros[:, 0].flatten(1).any(1)
    assert 100 < int(erased.sum()) < 200
    for mask in zeros[erased, 0]:  # one axis-aligned rectangle: its bounding box is all zero
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and int(mask.sum()) == box.numel()
        assert 0.02 * 256 * 0.5 <= box.numel() <= 0.25 * 256 * 1.5  # area range, give or take rounding
    assert torch.equal(out, random_erasing(x, 0.5, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="erasing probability must be in"):
        random_erasing(x, 1.5, torch.Generator())


def test_augmentation_applies_shift_flip_and_erasing_in_order() -> None:
    x = torch.randn(64, 1, 12, 12)
    recipe = Augmentation(shift=0.25, flip=0.5, erasing=0.5)
    out = recipe(x, torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    expected = random_erasing(random_flip(random_shift(x, 0.25, generator), 0.5, generator), 0.5, generator)
    assert torch.equal(out, expected)
    assert torch.equal(Augmentation()(x, torch.Generator()), x)
