"""RAD / DrQ's augmentations against hand-built truths: one parameter set per frame stack
(identical frames stay identical), exact shifts, luma, cutout rectangles, the random
convolution against a per-sample conv2d, reproducibility, dtypes and the view chains."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curlrl.augment import (color_jitter, cutout, grayscale, make_views, parse_views, random_conv, random_crop,
                            random_shift)

OPS = {
    "shift": lambda x, g: random_shift(x, 4, g),
    "jitter": lambda x, g: color_jitter(x, generator=g),
    "grayscale": lambda x, g: grayscale(x, 0.5, g),
    "cutout": lambda x, g: cutout(x, 3, 8, g),
    "conv": lambda x, g: random_conv(x, g),
}


def _stacks(b=6, frames=3, h=12, w=14, seed=0, same_frames=False):
    """uint8 stacks that vary over height, width and channel (and sample)."""
    rng = np.random.default_rng(seed)
    one = rng.integers(0, 256, (b, 1 if same_frames else frames, 3, h, w), dtype=np.uint8)
    x = np.repeat(one, frames, axis=1) if same_frames else one
    return torch.from_numpy(x.reshape(b, frames * 3, h, w))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", OPS)
def test_every_frame_of_a_stack_gets_the_same_parameters(name):
    x = _stacks(same_frames=True)
    out = OPS[name](x, _gen(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out[:, 0:3], out[:, 3:6]) and torch.equal(out[:, 0:3], out[:, 6:9])
    assert not torch.equal(out, x)


@pytest.mark.parametrize("name", OPS)
def test_the_same_generator_state_gives_the_same_views_and_stacks_differ(name):
    x = _stacks(b=16)
    a, b = OPS[name](x, _gen(3)), OPS[name](x, _gen(3))
    assert torch.equal(a, b)
    if name != "grayscale":  # p=0.5 per stack: some stacks are left as they are
        # parameters per stack: the same stack repeated gets different views
        rep = x[:1].expand(16, -1, -1, -1).contiguous()
        views = OPS[name](rep, _gen(4))
        assert len({v.numpy().tobytes() for v in views}) > 1


@pytest.mark.parametrize("name", OPS)
def test_float_input_stays_float(name):
    x = _stacks().float()
    assert OPS[name](x, _gen(0)).dtype == torch.float32


def test_shift_is_a_replicate_padded_translation():
    x = _stacks(b=400, h=10, w=10)
    out = random_shift(x, 2, _gen(5))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    seen = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(padded[i, :, dy:dy + 10, dx:dx + 10], out[i].numpy())]
        assert hits, f"stack {i} is not a window of its padded frames"
        seen.update(hits)
    assert len(seen) == 25  # every shift in [-2, 2]^2 occurs
    assert torch.equal(random_shift(x, 0, _gen(5)), x)


def test_grayscale_is_the_bt601_luma_of_each_frame():
    x = _stacks(b=32)
    out = grayscale(x, 1.0, _gen(0))
    xs = x.numpy().astype(np.float64).reshape(32, 3, 3, 12, 14)
    luma = 0.299 * xs[:, :, 0] + 0.587 * xs[:, :, 1] + 0.114 * xs[:, :, 2]
    want = np.repeat(np.clip(np.round(luma), 0, 255)[:, :, None], 3, axis=2).reshape(32, 9, 12, 14)
    assert np.abs(out.numpy().astype(int) - want).max() <= 1  # float32 rounding at .5
    assert torch.equal(grayscale(x, 0.0, _gen(0)), x)
    picked = grayscale(_stacks(b=2000, h=2, w=2), 0.3, _gen(1))
    changed = (picked != _stacks(b=2000, h=2, w=2)).flatten(1).any(1).float().mean().item()
    assert changed == pytest.approx(0.3, abs=0.04)


def test_cutout_zeros_exactly_one_rectangle_of_the_allowed_sizes():
    x = _stacks(b=200, h=20, w=20) | 1  # no zero pixels before the cutout
    out = cutout(x, 3, 8, _gen(2))
    sizes = set()
    for i in range(len(x)):
        zero = (out[i] == 0).numpy()
        assert (zero == zero[0]).all()  # the same rectangle in every channel
        ys, xs = np.nonzero(zero[0])
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert zero[0].sum() == h * w and 3 <= h <= 8 and 3 <= w <= 8  # a full rectangle
        keep = ~zero
        assert np.array_equal(out[i].numpy()[keep], x[i].numpy()[keep])
        sizes.add((h, w))
    assert len(sizes) > 20
    with pytest.raises(ValueError, match="min_size 30 is larger than the frames"):
        cutout(x, 30, 40, _gen(0))
    assert cutout(x, 5, 99, _gen(0)).shape == x.shape  # max_size clamps to the frame


def test_random_conv_is_a_per_stack_conv2d_with_its_kernel():
    x = _stacks(b=4).float()
    out = random_conv(x, _gen(7))
    g = _gen(7)
    weight = torch.randn(4 * 3, 3, 3, 3, generator=g) * math.sqrt(2 / 54)
    for i in range(4):
        kernel = weight[3 * i:3 * i + 3]
        for f in range(3):
            want = F.conv2d(x[i:i + 1, 3 * f:3 * f + 3], kernel, padding=1)[0]
            torch.testing.assert_close(out[i, 3 * f:3 * f + 3], want, rtol=1e-5, atol=1e-4)
    u8 = random_conv(_stacks(b=4), _gen(7))
    assert u8.dtype == torch.uint8


def test_color_jitter_with_no_range_is_the_identity_and_brightness_scales():
    x = _stacks(b=8)
    same = color_jitter(x, 0.0, 0.0, 0.0, 0.0, _gen(0))
    assert (same.int() - x.int()).abs().max() <= 1  # the YIQ round trip in float32
    xf = x.float() / 4  # far from the clamp
    bright = color_jitter(xf, 0.5, 0.0, 0.0, 0.0, _gen(9))
    factor = (bright / xf.clamp(min=1e-6)).flatten(1)
    mask = xf.flatten(1) > 1
    for i in range(8):
        f = factor[i][mask[i]]
        assert torch.allclose(f, f.median().expand_as(f), atol=1e-3) and 0.5 <= f.median() <= 1.5


def test_channel_count_must_be_a_stack_of_rgb_frames():
    with pytest.raises(ValueError, match="8 channels are not a stack of 3-channel frames"):
        color_jitter(torch.zeros(2, 8, 5, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expects \(B, C, H, W\)"):
        random_shift(torch.zeros(8, 5, 5))


def test_random_crop_is_unchanged_by_the_view_chains():
    x = _stacks(b=16, h=20, w=20)
    view = make_views("crop", 16)
    assert torch.equal(view(x, _gen(11)), random_crop(x, 16, _gen(11)))


def test_view_chains():
    assert parse_views("crop") == ("crop",)
    assert parse_views("shift+cutout+jitter") == ("shift", "cutout", "jitter")
    with pytest.raises(ValueError, match="unknown augmentation 'jiter' .*did you mean 'jitter'"):
        parse_views("crop+jiter")
    with pytest.raises(ValueError, match="must start with crop or shift"):
        parse_views("jitter+crop")
    with pytest.raises(ValueError, match="twice"):
        parse_views("crop+conv+conv")
    x = _stacks(b=4, h=24, w=24)
    out = make_views("shift+grayscale+cutout+conv+jitter", 20)(x, _gen(0))
    assert out.shape == (4, 9, 20, 20) and out.dtype == torch.uint8
    # shift first centre-crops to the size, then translates by at most 4 px
    shifted = make_views("shift", 20)(x, _gen(1))
    centre = x[:, :, 2:22, 2:22].numpy()
    padded = np.pad(centre, ((0, 0), (0, 0), (4, 4), (4, 4)), mode="edge")
    for i in range(4):
        assert any(np.array_equal(padded[i, :, dy:dy + 20, dx:dx + 20], shifted[i].numpy())
                   for dy in range(9) for dx in range(9))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OPS)
def test_ops_run_on_the_device_with_a_device_generator(name):
    x = _stacks().cuda()
    g = torch.Generator("cuda").manual_seed(0)
    assert OPS[name](x, g).device.type == "cuda"


def test_shift_by_slices_equals_numpys_edge_padding_on_non_square_frames():
    # the CPU path moves each stack by slices; np.pad(mode="edge") then the drawn window is the truth
    x = _stacks(b=1000, h=6, w=9)
    g = _gen(11)
    out = random_shift(x, 4, g)
    g = _gen(11)
    oy = torch.randint(0, 9, (1000,), generator=g)
    ox = torch.randint(0, 9, (1000,), generator=g)  # the same draws, in the same order
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode="edge")
    for i in range(len(x)):
        y, s = int(oy[i]), int(ox[i])
        assert np.array_equal(out[i].numpy(), padded[i, :, y:y + 6, s:s + 9]), i
    assert {(int(a), int(b)) for a, b in zip(oy, ox)} == {(a, b) for a in range(9) for b in range(9)}
