"""Core maths against independent truth: hand-computed InfoNCE, explicit slicing, EMA formula."""
import copy
import math

import numpy as np
import pytest
import torch

from curlrl import CurlHead, PixelEncoder, center_crop, ema_update, random_crop


def test_logits_and_loss_match_hand_computation():
    torch.manual_seed(0)
    b, d = 5, 4
    head = CurlHead(d)
    za, zp = torch.randn(b, d), torch.randn(b, d)
    W = head.W.detach().numpy().astype(np.float64)
    a, p = za.numpy().astype(np.float64), zp.numpy().astype(np.float64)
    raw = np.array([[sum(a[i, k] * W[k, m] * p[j, m] for k in range(d) for m in range(d))
                     for j in range(b)] for i in range(b)])
    expected_logits = raw - raw.max(axis=1, keepdims=True)
    np.testing.assert_allclose(head.logits(za, zp).detach().numpy(), expected_logits, rtol=1e-5, atol=1e-5)
    expected_loss = np.mean([-raw[i, i] + math.log(np.exp(raw[i]).sum()) for i in range(b)])
    assert head.loss(za, zp).item() == pytest.approx(expected_loss, rel=1e-5)


def test_loss_is_low_when_positives_match_and_accuracy_counts_them():
    torch.manual_seed(0)
    head = CurlHead(8)
    with torch.no_grad():
        head.W.copy_(torch.eye(8) * 50)
    z = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    assert head.loss(z, z).item() < 0.05
    assert head.accuracy(z, z) == 1.0
    assert head.loss(z, z.roll(1, 0)).item() > 5.0
    assert head.accuracy(z, z.roll(1, 0)) == 0.0


def _position_coded(b, c, h, w):
    """Frames whose value identifies (sample, row, col) so a crop reveals its window."""
    y = torch.arange(h).view(1, 1, h, 1)
    x = torch.arange(w).view(1, 1, 1, w)
    s = torch.arange(b).view(b, 1, 1, 1)
    ch = torch.arange(c).view(1, c, 1, 1)
    return (s * 1_000_000 + ch * 10_000 + y * 100 + x).expand(b, c, h, w).contiguous()


@pytest.mark.parametrize("size", [84, 100, 1])
def test_random_crop_equals_explicit_slicing_with_one_window_per_stack(size):
    frames = _position_coded(32, 9, 100, 100)
    out = random_crop(frames, size, torch.Generator().manual_seed(1))
    assert out.shape == (32, 9, size, size)
    for i in range(32):
        oy, ox = int(out[i, 0, 0, 0] // 100 % 100), int(out[i, 0, 0, 0] % 100)
        assert torch.equal(out[i], frames[i, :, oy:oy + size, ox:ox + size])  # same window, every channel


def test_random_crop_offsets_cover_the_inclusive_range_uniformly():
    frames = _position_coded(4000, 3, 8, 8)
    out = random_crop(frames, 5, torch.Generator().manual_seed(0))
    oy = (out[:, 0, 0, 0] // 100 % 100).numpy()
    ox = (out[:, 0, 0, 0] % 100).numpy()
    for off in (oy, ox):
        counts = np.bincount(off, minlength=4)
        assert len(counts) == 4 and off.max() == 3  # 0 .. H - size inclusive, never beyond
        assert counts.min() > 4000 / 4 * 0.85        # roughly uniform
    assert not np.array_equal(oy, ox)                 # y and x drawn independently


def test_random_crop_keeps_uint8_is_seeded_and_rejects_bad_sizes():
    frames = torch.randint(0, 255, (6, 9, 20, 20), dtype=torch.uint8)
    a = random_crop(frames, 16, torch.Generator().manual_seed(3))
    b = random_crop(frames, 16, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    with pytest.raises(ValueError):
        random_crop(frames, 21)
    with pytest.raises(ValueError):
        random_crop(frames[0], 8)


def test_center_crop_is_the_middle_window():
    frames = _position_coded(2, 3, 100, 100)
    assert torch.equal(center_crop(frames, 84), frames[..., 8:92, 8:92])
    assert torch.equal(center_crop(frames[0], 84), frames[0, :, 8:92, 8:92])


def test_ema_update_matches_formula_in_place():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.data.normal_()
    before = [p.detach().clone() for p in target.parameters()]
    ids = [id(p) for p in target.parameters()]
    ema_update(target, online, 0.05)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t.detach(), 0.95 * b + 0.05 * o.detach())
        assert t.grad is None
    assert ids == [id(p) for p in target.parameters()]


def test_encoder_shapes_and_uint8_float_equivalence():
    torch.manual_seed(0)
    enc = PixelEncoder((9, 84, 84))
    assert enc.conv_dim == 32 * 35 * 35  # 39200, as in CURL
    obs = torch.randint(0, 256, (3, 9, 84, 84), dtype=torch.uint8)
    z_uint8 = enc(obs)
    assert z_uint8.shape == (3, 50)
    torch.testing.assert_close(z_uint8, enc(obs.float() / 255))
    # LayerNorm without tanh by default (the reference code); tanh bounds the output
    enc_tanh = PixelEncoder((9, 84, 84), output_tanh=True)
    assert enc_tanh(obs).abs().max() <= 1.0


def test_encoder_detach_conv_blocks_conv_gradients_only():
    enc = PixelEncoder((3, 20, 20), feature_dim=8, num_layers=2, num_filters=4)
    enc(torch.rand(2, 3, 20, 20), detach_conv=True).sum().backward()
    assert all(p.grad is None for p in enc.conv.parameters())
    assert all(p.grad is not None for p in enc.head.parameters())
