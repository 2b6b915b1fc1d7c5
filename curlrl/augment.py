"""Image augmentations on uint8 frame stacks, batched on the input's device."""
from __future__ import annotations

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
