"""Image augmentations on uint8 frame stacks, batched on the input's device: CURL's random
crop, DrQ's shift and RAD's colour jitter, grayscale, cutout and random convolution, and
the view chains (``augment=crop+jitter``) the agent and pretraining draw their views with."""
from __future__ import annotations

import difflib
import math

import torch


def random_crop(frames: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random ``size``×``size`` window from each stack of a batch.

    Args:
        frames: (B, C, H, W) tensor of any dtype (uint8 stays uint8); C holds the whole
            frame stack, so every frame of a stack gets the *same* window.
        size: output height and width, at most min(H, W).
        generator: torch generator on ``frames.device`` for reproducible offsets.

    Returns:
        (B, C, size, size) tensor, same dtype and device. Offsets are drawn
        independently per sample, uniformly over ``0 .. H - size`` inclusive (the
        reference code never used the last offset).
    """
    if frames.ndim != 4:
        raise ValueError(f"random_crop expects (B, C, H, W), got shape {tuple(frames.shape)}")
    b, _, h, w = frames.shape
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the frames ({h}x{w})")
    dev = frames.device
    oy = torch.randint(0, h - size + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, w - size + 1, (b,), generator=generator, device=dev)
    # unfold makes every window a view; one advanced index picks a window per sample.
    windows = frames.unfold(2, size, 1).unfold(3, size, 1)  # (B, C, H-s+1, W-s+1, s, s)
    return windows[torch.arange(b, device=dev), :, oy, ox]


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Crop the central ``size``×``size`` window of (..., H, W) frames (eval-time view)."""
    h, w = frames.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the frames ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top:top + size, left:left + size]


# -- RAD / DrQ's augmentations, one set of parameters per frame stack -------------------------
# Each takes a (B, C, H, W) batch whose C channels hold a stack of frames (C = frames x
# channels_per_frame, e.g. 9 = 3 RGB frames), draws its random parameters once per stack
# (sample b) from ``generator`` on the frames' device, applies them to every frame of that
# stack, and returns the input's dtype (uint8 results rounded and clamped to [0, 255]).

def _frames_view(frames: torch.Tensor, channels_per_frame: int, op: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, F, channels_per_frame, H, W) float32."""
    if frames.ndim != 4:
        raise ValueError(f"{op} expects (B, C, H, W) frame stacks, got shape {tuple(frames.shape)}")
    b, c, h, w = frames.shape
    if c % channels_per_frame:
        raise ValueError(f"{op}: {c} channels are not a stack of {channels_per_frame}-channel frames")
    return frames.float().view(b, c // channels_per_frame, channels_per_frame, h, w)


def _like(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Back to ``frames``' shape and dtype (uint8: rounded, clamped to [0, 255])."""
    x = x.reshape(frames.shape)
    if frames.dtype == torch.uint8:
        return x.round_().clamp_(0, 255).to(torch.uint8)
    return x.to(frames.dtype)


def _uniform(n: int, low: float, high: float, frames: torch.Tensor, generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=frames.device)
    return low + (high - low) * u


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as torchvision's rgb_to_grayscale


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) -> (B, F, 1, H, W) grey levels."""
    return _LUMA[0] * x[:, :, 0:1] + _LUMA[1] * x[:, :, 1:2] + _LUMA[2] * x[:, :, 2:3]


def random_shift(frames: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's shift: pad every side by ``pad`` pixels (replicating the border) and crop back
    to H x W at a random offset, i.e. translate each stack by integers in [-pad, pad].

    Offsets are drawn as :func:`random_crop` draws them on the padded frames (row, then
    column, uniform in 0 .. 2 pad): the same generator gives the same shifts on every device.
    On the CPU each stack is moved by slices (a few copies per stack: several times faster
    than gathering the padded frames); elsewhere one gather does the whole batch."""
    if frames.ndim != 4:
        raise ValueError(f"random_shift expects (B, C, H, W) frame stacks, got shape {tuple(frames.shape)}")
    if pad < 0:
        raise ValueError(f"random_shift: pad must be >= 0, got {pad}")
    _, _, h, w = frames.shape
    dev = frames.device
    if dev.type == "cpu":
        return _shift_by_slices(frames, pad, generator)
    rows = (torch.arange(h + 2 * pad, device=dev) - pad).clamp(0, h - 1)
    cols = (torch.arange(w + 2 * pad, device=dev) - pad).clamp(0, w - 1)
    padded = frames[:, :, rows][:, :, :, cols]  # replicate padding by index, any dtype
    return random_crop(padded, h, generator) if h == w else _crop_hw(padded, h, w, generator)


def _shift_by_slices(frames: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """:func:`random_shift` stack by stack: output pixel (r, s) is input pixel
    (clamp(r + dy), clamp(s + dx)) with dy, dx = offset - pad; the rows and columns that come
    from outside are copies of the nearest inside ones (replicate padding)."""
    b, _, h, w = frames.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=frames.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=frames.device)
    out = torch.empty_like(frames)
    for i, (y, x) in enumerate(zip(oy.tolist(), ox.tolist())):
        dy, dx = y - pad, x - pad
        r0, r1 = max(0, -dy), min(h, h - dy)   # output rows whose source row is inside the frame
        s0, s1 = max(0, -dx), min(w, w - dx)
        o = out[i]
        o[:, r0:r1, s0:s1] = frames[i, :, r0 + dy:r1 + dy, s0 + dx:s1 + dx]
        if s0 > 0:
            o[:, r0:r1, :s0] = o[:, r0:r1, s0:s0 + 1]
        if s1 < w:
            o[:, r0:r1, s1:] = o[:, r0:r1, s1 - 1:s1]
        if r0 > 0:
            o[:, :r0] = o[:, r0:r0 + 1]
        if r1 < h:
            o[:, r1:] = o[:, r1 - 1:r1]
    return out


def _crop_hw(frames: torch.Tensor, h: int, w: int, generator) -> torch.Tensor:
    b, _, fh, fw = frames.shape
    dev = frames.device
    oy = torch.randint(0, fh - h + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, fw - w + 1, (b,), generator=generator, device=dev)
    windows = frames.unfold(2, h, 1).unfold(3, w, 1)
    return windows[torch.arange(b, device=dev), :, oy, ox]


def color_jitter(frames: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, generator: torch.Generator | None = None,
                 channels_per_frame: int = 3) -> torch.Tensor:
    """RAD's colour jitter on RGB stacks, in this order: brightness (x * b), contrast
    (towards each frame's mean grey by c), saturation (towards each pixel's grey by s), hue
    (a rotation of the chroma plane, YIQ, by 2π h), with b, c, s uniform in [1 - x, 1 + x]
    and h in [-hue, hue], one draw per stack. Values are treated on the input's own scale
    (uint8: 0..255) and clamped to it for uint8."""
    if channels_per_frame != 3:
        raise ValueError("color_jitter works on RGB frames (channels_per_frame=3)")
    x = _frames_view(frames, 3, "color_jitter")
    n, top = x.shape[0], 255.0 if frames.dtype == torch.uint8 else None
    shape = (n, 1, 1, 1, 1)
    b = _uniform(n, 1 - brightness, 1 + brightness, frames, generator).view(shape)
    c = _uniform(n, 1 - contrast, 1 + contrast, frames, generator).view(shape)
    s = _uniform(n, 1 - saturation, 1 + saturation, frames, generator).view(shape)
    h = _uniform(n, -hue, hue, frames, generator).view(n, 1)

    def clamp(v):
        return v.clamp(0, top) if top is not None else v

    x = clamp(x * b)
    x = clamp((x - _luma(x).mean(dim=(-2, -1), keepdim=True)) * c + _luma(x).mean(dim=(-2, -1), keepdim=True))
    grey = _luma(x)
    x = clamp(grey + (x - grey) * s)
    # hue: RGB -> YIQ, rotate (I, Q) by theta, back
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=frames.device)
    yiq = torch.einsum("ij,bfjhw->bfihw", to_yiq, x)
    theta = 2 * math.pi * h
    cos, sin = torch.cos(theta).view(n, 1, 1, 1), torch.sin(theta).view(n, 1, 1, 1)
    i, q = yiq[:, :, 1], yiq[:, :, 2]
    yiq = torch.stack([yiq[:, :, 0], cos * i - sin * q, sin * i + cos * q], dim=2)
    x = clamp(torch.einsum("ij,bfjhw->bfihw", torch.linalg.inv(to_yiq), yiq))
    return _like(x, frames)


def grayscale(frames: torch.Tensor, p: float = 0.3, generator: torch.Generator | None = None,
              channels_per_frame: int = 3) -> torch.Tensor:
    """With probability ``p`` per stack, every RGB frame of the stack becomes its grey level
    (0.299 R + 0.587 G + 0.114 B) in all three channels (RAD's random grayscale)."""
    if channels_per_frame != 3:
        raise ValueError("grayscale works on RGB frames (channels_per_frame=3)")
    x = _frames_view(frames, 3, "grayscale")
    pick = (torch.rand(x.shape[0], generator=generator, device=frames.device) < p).view(-1, 1, 1, 1, 1)
    return _like(torch.where(pick, _luma(x).expand_as(x), x), frames)


def cutout(frames: torch.Tensor, min_size: int = 10, max_size: int = 30,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """RAD's cutout: one rectangle per stack, of height and width uniform in
    [min_size, max_size] (clamped to the frame) at a uniform position inside the frame, set to
    0 in every channel of the stack."""
    if frames.ndim != 4:
        raise ValueError(f"cutout expects (B, C, H, W) frame stacks, got shape {tuple(frames.shape)}")
    n, _, fh, fw = frames.shape
    if not 1 <= min_size <= max_size:
        raise ValueError(f"cutout: need 1 <= min_size <= max_size, got {min_size} and {max_size}")
    if min_size > min(fh, fw):
        raise ValueError(f"cutout: min_size {min_size} is larger than the frames ({fh}x{fw})")
    dev = frames.device
    size_h = torch.randint(min_size, min(max_size, fh) + 1, (n,), generator=generator, device=dev)
    size_w = torch.randint(min_size, min(max_size, fw) + 1, (n,), generator=generator, device=dev)
    y0 = (torch.rand(n, generator=generator, device=dev) * (fh - size_h + 1)).long()
    x0 = (torch.rand(n, generator=generator, device=dev) * (fw - size_w + 1)).long()
    ys, xs = torch.arange(fh, device=dev).view(1, fh), torch.arange(fw, device=dev).view(1, fw)
    in_y = (ys >= y0[:, None]) & (ys < (y0 + size_h)[:, None])
    in_x = (xs >= x0[:, None]) & (xs < (x0 + size_w)[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (B, 1, H, W)
    return frames.masked_fill(mask, 0)


def random_conv(frames: torch.Tensor, generator: torch.Generator | None = None,
                channels_per_frame: int = 3) -> torch.Tensor:
    """RAD's random convolution: per stack a 3x3 convolution from ``channels_per_frame`` to
    ``channels_per_frame`` channels with Xavier-normal weights (std sqrt(2 / (fan_in +
    fan_out))), no bias, zero padding, applied to every frame of the stack (one grouped conv
    over the batch). uint8 results are clamped to [0, 255]; float ones are not bounded."""
    x = _frames_view(frames, channels_per_frame, "random_conv")
    n, f, ch, h, w = x.shape
    fan = ch * 9
    weight = torch.randn(n * ch, ch, 3, 3, generator=generator, device=frames.device) * math.sqrt(2 / (2 * fan))
    # frames as the conv's batch, (stack, channel) pairs as its channels, one group per stack
    inp = x.permute(1, 0, 2, 3, 4).reshape(f, n * ch, h, w)
    out = torch.nn.functional.conv2d(inp, weight, padding=1, groups=n)
    return _like(out.view(f, n, ch, h, w).permute(1, 0, 2, 3, 4), frames)


#: the augmentations a view chain can name after its first step (crop or shift)
VIEW_AUGMENTS = {"jitter": color_jitter, "grayscale": grayscale, "cutout": cutout, "conv": random_conv}
VIEW_FIRST = ("crop", "shift")


def parse_views(spec: str) -> tuple[str, ...]:
    """A view chain like ``"crop"``, ``"shift+cutout"`` or ``"crop+jitter+grayscale"``: crop
    (a random ``crop_size`` window, CURL's) or shift (centre crop to ``crop_size``, then DrQ's
    ±4 px shift) first, then any of jitter, grayscale, cutout, conv, each at most once.
    ValueError naming the problem (and the nearest name) otherwise."""
    names = tuple(p.strip() for p in str(spec).split("+"))
    known = (*VIEW_FIRST, *VIEW_AUGMENTS)
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"unknown augmentation {name!r} in {spec!r}{hint}; known: {', '.join(known)}")
    if names[0] not in VIEW_FIRST or any(n in VIEW_FIRST for n in names[1:]):
        raise ValueError(f"augmentation chain {spec!r} must start with crop or shift (they set the size), and "
                         f"only there")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation chain {spec!r} names an augmentation twice")
    return names


def make_views(spec: str, size: int):
    """The view function of chain ``spec`` (:func:`parse_views`) for ``size`` x ``size``
    outputs: ``view(frames, generator) -> (B, C, size, size)``. ``"crop"`` alone is exactly
    :func:`random_crop` (the same generator draws)."""
    names = parse_views(spec)

    def view(frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if names[0] == "crop":
            x = random_crop(frames, size, generator)
        else:
            x = random_shift(center_crop(frames, size), 4, generator)
        for name in names[1:]:
            x = VIEW_AUGMENTS[name](x, generator=generator)
        return x

    view.spec = "+".join(names)
    return view
