"""Time each conv layer of the CURL encoder alone: forward, backward to the input, backward
to the weights, in channels_last and NCHW, with the achieved GFLOP/s of each.

Shows which kernels of an update run near the machine's matmul rate (printed first, as in
update_speed.py) and which do not. Layers as in PixelEncoder on 84x84 crops of 3 stacked
RGB frames: 9 -> 32 channels with stride 2, then 32 -> 32 with stride 1.

    python benchmarks/conv_layers.py [--batch-size 128] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from update_speed import matmul_gflops  # benchmarks/ is on sys.path when run as a script


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b = args.batch_size
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, batch {b}")
    print(f"matmul_gflops={matmul_gflops('cpu'):.1f}")
    for cin, size, stride in ((9, 84, 2), (32, 41, 1), (32, 39, 1), (32, 37, 1)):
        for channels_last in (True, False):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = torch.randn(b, cin, size, size).contiguous(memory_format=fmt)
            w = (0.1 * torch.randn(32, cin, 3, 3)).contiguous(memory_format=fmt)
            y = F.conv2d(x, w, None, stride)
            grad = torch.randn_like(y).contiguous(memory_format=fmt)
            gflop = 2 * b * 32 * cin * 9 * y.shape[2] * y.shape[3] / 1e9

            # the closures are timed within this iteration, so late binding is harmless
            def backward(mask):
                return lambda: torch.ops.aten.convolution_backward(
                    grad, x, w, None, [stride, stride], [0, 0], [1, 1], False, [0, 0], 1, mask)  # noqa: B023

            row = {"forward": median_ms(lambda: F.conv2d(x, w, None, stride), args.repeats),  # noqa: B023
                   "backward_input": median_ms(backward([True, False, False]), args.repeats),
                   "backward_weight": median_ms(backward([False, True, False]), args.repeats)}
            print(f"layer in={cin}x{size}x{size} stride={stride} channels_last={channels_last} gflop={gflop:.2f} "
                  + " ".join(f"{k}_ms={v:.1f} {k}_gflops={gflop / v * 1000:.0f}" for k, v in row.items()),
                  flush=True)


if __name__ == "__main__":
    main()
