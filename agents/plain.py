"""The reference's CURL-SAC update written out plainly: the oracle for the default agent.

:class:`ReferenceCurlSac` restates MishaLaskin/curl's ``CurlSacAgent.update`` (critic,
actor/alpha, soft target update, CPC/CURL step) with one network call per use, nothing
shared between passes, and **its optimizers built as the reference builds them**:

- ``critic_optimizer`` over the critic encoder + both Q MLPs (critic_lr, critic_beta);
- ``actor_optimizer`` over the whole actor: its own Linear+LayerNorm head, the policy
  MLP and the conv weights it shares with the critic (they get no actor gradient);
- ``log_alpha_optimizer``;
- ``encoder_optimizer`` over the critic encoder and ``cpc_optimizer`` over W, the critic
  encoder and the critic-target encoder, both at encoder_lr with Adam's default betas,
  both zeroed, backpropagated and stepped on the same CURL loss.

``zero_grad`` keeps zero-filled gradients (``set_to_none=False``), as the PyTorch of the
reference's time did. The tests check that ``CurlSacAgent``'s default update gives the
same parameters and optimizer moments; ``benchmarks/update_speed.py --mode plain``
times it as the reference-like baseline.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from curlrl.agents.curl_sac import CurlSacAgent
from curlrl.augment import random_crop


def _soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.data.copy_(tau * o.data + (1 - tau) * t.data)


class ReferenceCurlSac:
    """A copy of an agent's networks, updated exactly as the reference code updates them.

    Args:
        agent: the agent whose current weights, hyperparameters, crop-generator state and
            update count are copied (the agent itself is never modified).
    """

    def __init__(self, agent: CurlSacAgent) -> None:
        cfg = self.cfg = agent.cfg
        self.device = agent.device
        self.encoder = copy.deepcopy(agent.encoder)                  # critic.encoder
        self.encoder_target = copy.deepcopy(agent.encoder_target)    # critic_target.encoder
        self.actor_head = copy.deepcopy(agent.actor_head)            # actor.encoder's fc + ln
        self.actor = copy.deepcopy(agent.actor)                      # actor.trunk
        self.q = copy.deepcopy(agent.q)                              # critic.Q1, critic.Q2
        self.q_target = copy.deepcopy(agent.q_target)
        self.curl_head = copy.deepcopy(agent.curl_head)              # CURL.W
        for net in (self.encoder_target, self.q_target):
            net.requires_grad_(True)  # the reference's targets are plain modules; no_grad keeps them out
        self.log_alpha = agent.log_alpha.detach().clone().requires_grad_(True)
        self.target_entropy = agent.target_entropy
        self.generator = torch.Generator(self.device)
        self.generator.set_state(agent.generator.get_state())
        self.updates = agent.updates

        adam = torch.optim.Adam
        self.critic_optimizer = adam([*self.encoder.parameters(), *self.q.parameters()], lr=cfg.critic_lr,
                                     betas=(cfg.critic_beta, 0.999))
        self.actor_optimizer = adam([*self.encoder.conv.parameters(), *self.actor_head.parameters(),
                                     *self.actor.parameters()], lr=cfg.actor_lr, betas=(cfg.actor_beta, 0.999))
        self.log_alpha_optimizer = adam([self.log_alpha], lr=cfg.alpha_lr, betas=(cfg.alpha_beta, 0.999))
        self.encoder_optimizer = adam(self.encoder.parameters(), lr=cfg.encoder_lr)
        self.cpc_optimizer = adam([*self.curl_head.parameters(), *self.encoder.parameters(),
                                   *self.encoder_target.parameters()], lr=cfg.encoder_lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def _actor(self, obs: torch.Tensor):
        """The reference's ``actor(obs, detach_encoder=True)``: tied conv, detached, own head."""
        return self.actor(self.actor_head(self.encoder.conv(obs).detach()))

    def update(self, batch: dict) -> dict[str, float]:
        """One reference update on an uncropped batch; returns its losses as floats.

        The reference calls ``update(replay, L, step)`` once per agent step from step
        1000 on and tests ``step % 2``; its first update is at an even step, so update
        k (from 0) steps the actor and the targets when k is even.
        """
        cfg = self.cfg
        b = {k: torch.as_tensor(v).to(self.device) for k, v in batch.items()}
        step = self.updates
        self.updates += 1
        # sample_cpc: crops of obs, next_obs, then pos (= a copy of obs), in that order
        obs = random_crop(b["obs"], cfg.crop_size, self.generator)
        next_obs = random_crop(b["next_obs"], cfg.crop_size, self.generator)
        pos = random_crop(b["obs"], cfg.crop_size, self.generator)
        out = {}

        # update_critic
        with torch.no_grad():
            _, policy_action, log_pi, _ = self.actor(self.actor_head(self.encoder.conv(next_obs)))
            target_q1, target_q2 = self.q_target(self.encoder_target(next_obs), policy_action)
            target_v = torch.min(target_q1, target_q2) - self.alpha.detach() * log_pi
            target_q = b["reward"] + b["not_done"] * cfg.discount * target_v
        current_q1, current_q2 = self.q(self.encoder(obs), b["action"])
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad(set_to_none=False)
        critic_loss.backward()
        self.critic_optimizer.step()
        out["critic_loss"] = critic_loss.item()

        # update_actor_and_alpha
        if step % cfg.actor_update_every == 0:
            _, pi, log_pi, _ = self._actor(obs)
            actor_q1, actor_q2 = self.q(self.encoder(obs, detach_conv=True), pi)
            actor_loss = (self.alpha.detach() * log_pi - torch.min(actor_q1, actor_q2)).mean()
            self.actor_optimizer.zero_grad(set_to_none=False)
            actor_loss.backward()
            self.actor_optimizer.step()
            self.log_alpha_optimizer.zero_grad(set_to_none=False)
            alpha_loss = (self.alpha * (-log_pi - self.target_entropy).detach()).mean()
            alpha_loss.backward()
            self.log_alpha_optimizer.step()
            out.update(actor_loss=actor_loss.item(), alpha_loss=alpha_loss.item())

        # soft target update: Q heads at critic_tau, the encoder (= CURL's key encoder) at encoder_tau
        if step % cfg.target_update_every == 0:
            _soft_update(self.q_target, self.q, cfg.critic_tau)
            _soft_update(self.encoder_target, self.encoder, cfg.encoder_tau)

        # update_cpc
        z_a = self.encoder(obs)
        with torch.no_grad():
            z_pos = self.encoder_target(pos)
        logits = z_a @ (self.curl_head.W @ z_pos.T)
        logits = logits - logits.max(dim=1)[0][:, None]
        loss = F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))
        self.encoder_optimizer.zero_grad(set_to_none=False)
        self.cpc_optimizer.zero_grad(set_to_none=False)
        loss.backward()
        self.encoder_optimizer.step()
        self.cpc_optimizer.step()
        out["curl_loss"] = loss.item()
        return out
