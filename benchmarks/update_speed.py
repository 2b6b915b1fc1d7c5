"""Time CURL-SAC updates on synthetic uint8 data of the training shape.

Each timed iteration is what training does per agent step: sample a batch from a real
ReplayBuffer (9x100x100 stacks; ``--compress`` for the LZ4 storage training uses by
default, ``--frames TASK`` for real renders instead of noise), crop it on the device and
update the agent. Modes:
``exact`` (CurlSacAgent's default, the reference's update), ``fused`` (the fast variant,
with ``encoder_adam=shared``) and ``plain`` (``agents/plain.py``: the reference's update
with one network call per use and its own optimizers, two Adam steps on the encoder for
the CURL loss included). FLOPs per update are counted once with
torch's FlopCounterMode (forward + backward of every op), so GFLOP/s is achieved work.
To compare machines, the script first measures this machine's fp32 matmul rate (large
square matmuls on the same threads) and prints each mode's rate as a fraction of it.

    python benchmarks/update_speed.py --batch-size 128 --mode exact,fused,plain
    python benchmarks/update_speed.py --device cuda --batch-size 512 --mode exact,fused --capture off,compile
    python benchmarks/update_speed.py --batch-size 128 --mode exact --objective all   # every objective vs curl

``--objective`` (comma list, ``all``, or ``none`` for curl=false) times the exact update
with each auxiliary objective; ratios are then against the first one listed (curl first
with ``all``).

Ends with ``ms_per_update=<float>`` for the first mode listed.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from curlrl import ReplayBuffer
from curlrl.agents import AgentConfig, CurlSacAgent
from curlrl.agents.plain import ReferenceCurlSac
from replay_memory import source_frames  # benchmarks/ is on sys.path when run as a script


def filled_replay(action_dim: int, image_size: int, transitions: int = 1500, compress: bool = False,
                  frames: str = "random") -> ReplayBuffer:
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(transitions, (3, image_size, image_size), action_dim, frame_stack=3, seed=0,
                          compress=compress)
    source = source_frames(frames, 64, image_size)
    stack = lambda t: np.concatenate([source[(t - d) % 64] for d in (2, 1, 0)])  # noqa: E731
    for t in range(transitions):
        last = t % 125 == 124
        replay.add(stack(t), rng.uniform(-1, 1, action_dim).astype(np.float32), float(rng.random()),
                   stack(t + 1), terminated=False, truncated=last)
    return replay


def matmul_gflops(device: str, n: int = 2048, seconds: float = 1.5) -> float:
    """This machine's achieved fp32 rate on large square matmuls (2·n³ FLOP each)."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    for _ in range(2):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the warm-up must not spill into the timed loop
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - t0) / 1e9


def bench_mode(mode: str, args, replay: ReplayBuffer, capture: str = "off", flops: float | None = None,
               objective: str = "curl") -> dict:
    """Time ``mode`` with ``capture`` and ``objective`` ("none": curl=false); FLOPs are
    counted on the eager update (``flops`` reuses a count)."""
    torch.manual_seed(0)
    aux = dict(curl=False) if objective == "none" else dict(objective=objective)
    cfg = AgentConfig(update_mode="exact" if mode == "plain" else mode, channels_last=not args.no_channels_last,
                      amp=args.amp, encoder_adam="shared" if mode == "fused" else "reference",
                      capture="off" if mode == "plain" else capture, **aux)
    agent = CurlSacAgent((9, args.image_size, args.image_size), args.action_dim, cfg, device=args.device)
    step = ReferenceCurlSac(agent).update if mode == "plain" else agent.update

    def one():
        step(agent.sample(replay, args.batch_size))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    t_compile = time.perf_counter()
    for _ in range(max(args.warmup, 2 if capture != "off" else 0)):  # a captured update compiles here
        one()
    warmup_s = time.perf_counter() - t_compile
    if flops is None:
        with FlopCounterMode(display=False) as counter:  # two updates: one with, one without the actor step
            one()
            one()
        flops = counter.get_total_flops() / 2
    times = []
    for _ in range(args.updates):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times)
    return dict(mode=mode, capture=capture, objective=objective, ms=ms, mean_ms=1000 * statistics.mean(times),
                gflop=flops / 1e9,
                gflops_per_s=flops / 1e9 / (ms / 1000), warmup_s=warmup_s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mode", default="exact,fused", help="comma list of exact (the default mode), fused, plain")
    p.add_argument("--device", default="cpu")
    p.add_argument("--updates", type=int, default=20, help="timed updates per mode (>= 20 for quoted figures)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--image-size", type=int, default=100)
    p.add_argument("--action-dim", type=int, default=1, help="1 = cartpole; 6 = cheetah/walker")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16: conv trunks under bfloat16 autocast")
    p.add_argument("--capture", default="off",
                   help="comma list of off, compile, cudagraphs (CUDA only): each mode is timed with each")
    p.add_argument("--compress", action="store_true", help="LZ4-compressed replay, as training uses by default")
    p.add_argument("--objective", default="curl",
                   help="comma list of objectives (curlrl.objectives), 'all', or 'none' (curl=false); exact mode")
    p.add_argument("--frames", default="random",
                   help="'random' noise (incompressible) or a DMC task to render, e.g. cartpole-swingup")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}, batch {args.batch_size}, "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}, channels_last={not args.no_channels_last}, "
          f"amp={args.amp}, "
          f"replay={'lz4' if args.compress else 'raw'}, frames={args.frames}")
    peak = matmul_gflops(args.device)
    print(f"matmul_gflops={peak:.1f}  (fp32 2048x2048 matmul on these threads: the machine's reference rate)")
    replay = filled_replay(args.action_dim, args.image_size, compress=args.compress, frames=args.frames)
    captures = [c.strip() for c in args.capture.split(",") if c.strip()]
    results = []
    objectives = [o.strip() for o in args.objective.split(",") if o.strip()]
    if objectives == ["all"]:
        from curlrl.options import OBJECTIVE_NAMES
        objectives = [*OBJECTIVE_NAMES, "none"]
    if objectives != ["curl"]:
        modes = [m for m in modes if m != "exact"] if len(modes) > 1 else []
        for o in objectives:
            results.append(bench_mode("exact", args, replay, captures[0], None, o))
    for m in modes:
        flops = None
        for c in captures if m != "plain" else ["off"]:
            results.append(bench_mode(m, args, replay, c, flops))
            flops = results[-1]["gflop"] * 1e9
    for r in results:
        print(f"mode={r['mode']} capture={r['capture']} objective={r['objective']} batch={args.batch_size} "
              f"median_ms={r['ms']:.1f} "
              f"mean_ms={r['mean_ms']:.1f} gflop_per_update={r['gflop']:.1f} achieved_gflops={r['gflops_per_s']:.1f} "
              f"of_matmul={r['gflops_per_s'] / peak:.2f} warmup_s={r['warmup_s']:.1f}")
    def name(r):
        base = r["mode"] if r["objective"] == "curl" else f"{r['mode']}:{r['objective']}"
        return base if len(captures) == 1 else f"{base}+{r['capture']}"

    for r in results[1:]:
        print(f"ratio {name(r)}/{name(results[0])} = {r['ms'] / results[0]['ms']:.2f}")
    print(f"ms_per_update={results[0]['ms']:.1f}")


if __name__ == "__main__":
    main()
