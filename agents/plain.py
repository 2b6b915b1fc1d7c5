"""The CURL-SAC update written plainly: one network call per use, nothing shared.

It computes the same math as ``update_mode="exact"`` of :class:`CurlSacAgent` and
serves as the independent formulation that the tests compare ``exact`` against, and as
the baseline of ``benchmarks/update_speed.py`` (it does the passes the reference code
does, minus the reference's double encoder step).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from curlrl.agents.curl_sac import CurlSacAgent
from curlrl.augment import random_crop
from curlrl.ema import ema_update


def plain_update(agent: CurlSacAgent, batch: dict) -> dict[str, float]:
    """The reference's update written step by step: one network call per use, no sharing.

    Same order and RNG draws as the agent: crops of obs, next_obs, positive; critic
    step; actor/alpha step; CURL step on a fresh anchor pass; EMA last.
    """
    cfg, g = agent.cfg, agent.generator
    b = {k: torch.as_tensor(v).to(agent.device) for k, v in batch.items()}
    agent.updates += 1
    obs = random_crop(b["obs"], cfg.crop_size, g)
    next_obs = random_crop(b["next_obs"], cfg.crop_size, g)
    out = {}
    with torch.no_grad():
        _, next_pi, next_log_pi, _ = agent.actor(agent.actor_head(agent.encoder.conv(next_obs)))
        pos = random_crop(b["obs"], cfg.crop_size, g)
        tq1, tq2 = agent.q_target(agent.encoder_target(next_obs), next_pi)
        target = b["reward"] + b["not_done"] * cfg.discount * (torch.min(tq1, tq2) - agent.alpha * next_log_pi)
    q1, q2 = agent.q(agent.encoder(obs), b["action"])
    critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    for n in ("encoder", "critic"):
        agent.optimizers[n].zero_grad(set_to_none=True)
    critic_loss.backward()
    agent.optimizers["encoder"].step()
    agent.optimizers["critic"].step()
    out["critic_loss"] = critic_loss.item()
    if agent.updates % cfg.actor_update_every == 0:
        _, pi, log_pi, _ = agent.actor(agent.actor_head(agent.encoder.conv(obs).detach()))
        q1, q2 = agent.q(agent.encoder(obs, detach_conv=True), pi)
        actor_loss = (agent.alpha.detach() * log_pi - torch.min(q1, q2)).mean()
        agent.optimizers["actor"].zero_grad(set_to_none=True)
        actor_loss.backward()
        agent.optimizers["actor"].step()
        alpha_loss = (agent.alpha * (-log_pi - agent.target_entropy).detach()).mean()
        agent.optimizers["alpha"].zero_grad(set_to_none=True)
        alpha_loss.backward()
        agent.optimizers["alpha"].step()
        out.update(actor_loss=actor_loss.item(), alpha_loss=alpha_loss.item())
    z_anchor = agent.encoder(obs)
    with torch.no_grad():
        z_pos = agent.encoder_target(pos)
    curl_loss = agent.curl_head.loss(z_anchor, z_pos)
    # encoder_adam="per_loss": the CURL gradient has its own Adam state on the encoder
    encoder_opt = agent.optimizers[agent.curl_encoder_optimizer]
    encoder_opt.zero_grad(set_to_none=True)
    agent.optimizers["curl"].zero_grad(set_to_none=True)
    curl_loss.backward()
    encoder_opt.step()
    agent.optimizers["curl"].step()
    out["curl_loss"] = curl_loss.item()
    if agent.updates % cfg.target_update_every == 0:
        ema_update(agent.q_target, agent.q, cfg.critic_tau)
        ema_update(agent.encoder_target, agent.encoder, cfg.encoder_tau)
    return out
