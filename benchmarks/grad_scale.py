"""How large is the CURL gradient on the encoder next to the critic's? (a diagnostic)

Loads a run's checkpoint and saved replay, draws batches as training does, and prints,
for each encoder parameter, the norm of the critic-loss gradient, the norm of the
CURL-loss gradient (both at the checkpoint's weights, on the same anchor crop), their
ratio and cosine, and the RMS of the encoder Adam's sqrt(second moment). With one Adam
state for both losses (``encoder_adam=shared``), a CURL gradient k times smaller than
the critic's moves the encoder about 1/k as far as the critic step does.

    python benchmarks/grad_scale.py runs/cartpole-swingup/seed0 [--batch-size 128 --batches 4]

Ends with ``median_ratio=<float>`` (critic / CURL gradient norm, median over parameters
and batches).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

from curlrl import ReplayBuffer
from curlrl.errors import CurlrlError
from curlrl.jobs import config as config_mod
from curlrl.jobs.rundir import RunDir
from curlrl.jobs.train import build_env, load_agent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = RunDir(args.run_dir)
    try:
        cfg = config_mod.resolve(None, base=run.read_config())
        env = build_env(cfg)
        agent, state = load_agent(run, cfg, env.observation_space.shape, env.action_space.shape[0],
                                  torch.device("cpu"))
        replay = ReplayBuffer(cfg.replay_capacity, (3, cfg.image_size, cfg.image_size), agent.action_dim,
                              cfg.frame_stack, seed=0, compress=cfg.replay_compress)
        replay.load(run.replay_path)
    except (CurlrlError, OSError, KeyError) as exc:
        sys.exit(f"grad_scale: {exc}")
    if agent.curl_head is None:
        sys.exit("grad_scale: this run has curl=false: there is no CURL gradient")
    params = dict(agent.encoder.named_parameters())
    # the Adam state that carries the critic gradient on the encoder
    adam = agent.optimizers["encoder" if "encoder" in agent.optimizers else "critic"].state
    print(f"# {run}: env step {state['counters']['env_step']}, {agent.updates} updates, "
          f"update_mode={cfg.update_mode}, encoder_adam={cfg.encoder_adam}, batch {args.batch_size}")
    rows: dict[str, list[tuple[float, float]]] = {n: [] for n in params}
    for _ in range(args.batches):
        b = agent._to_device(replay.sample(args.batch_size))
        obs, _, target_q, z_key = agent.crops_and_targets(b)
        z = agent.encoder(obs)
        q1, q2 = agent.q(z, b["action"].float())
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        curl_loss = agent.curl_head.loss(z, z_key)
        g_critic = torch.autograd.grad(critic_loss, list(params.values()), retain_graph=True)
        g_curl = torch.autograd.grad(curl_loss, list(params.values()))
        for name, a, c in zip(params, g_critic, g_curl):
            rows[name].append((a.norm().item() / max(c.norm().item(), 1e-30),
                               F.cosine_similarity(a.flatten(), c.flatten(), dim=0).item()))
        print(f"batch: critic_loss={critic_loss.item():.3f} curl_loss={curl_loss.item():.3f}")
    print(f"{'parameter':24s} {'critic/curl':>11s} {'cosine':>7s} {'adam sqrt(v) rms':>17s}")
    for name, vals in rows.items():
        v = adam[params[name]]["exp_avg_sq"] if params[name] in adam else None
        rms = f"{v.mean().sqrt().item():17.3g}" if v is not None else f"{'-':>17s}"
        print(f"{name:24s} {statistics.median(r for r, _ in vals):11.3g} "
              f"{statistics.median(c for _, c in vals):7.2f} {rms}")
    print(f"median_ratio={statistics.median(r for vals in rows.values() for r, _ in vals):.1f}")


if __name__ == "__main__":
    main()
