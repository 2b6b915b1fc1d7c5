"""Checks against truths from outside curlrl's code: torch.distributions for the actor's
log-probability, and the CURL paper's published hyperparameters (Laskin et al. 2020,
Table 3 and Appendix) for the shipped per-task configs."""
import math

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from curlrl.agents.networks import Actor
from curlrl.jobs import config as config_mod


def test_actor_log_prob_is_the_tanh_gaussian_of_torch_distributions():
    torch.manual_seed(0)
    actor = Actor(7, 3, hidden_dim=16).double()
    with torch.no_grad():
        actor.net[-1].weight.mul_(0.1)  # moderate pre-tanh actions: the reference's 1e-6 stays negligible
    z = torch.randn(64, 7, dtype=torch.float64)
    noise = torch.randn(64, 3, dtype=torch.float64)
    mu_action, pi, log_prob, log_std = actor(z, noise=noise)
    mu, _ = actor.net(z).chunk(2, dim=-1)
    dist = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform()])
    u = mu + noise * log_std.exp()
    assert torch.allclose(pi, torch.tanh(u)) and torch.allclose(mu_action, torch.tanh(mu))
    want = dist.log_prob(torch.tanh(u)).sum(-1, keepdim=True)
    # curlrl (as the reference) adds 1e-6 inside log(1 - tanh^2): a bias of at most 3e-6 / (1 - pi^2)
    bound = (3e-6 / (1 - pi.pow(2))).sum(-1, keepdim=True) + 1e-9
    assert ((log_prob - want).abs() <= bound).all()
    assert (log_std >= -10).all() and (log_std <= 2).all()


# The paper's Table 3 (shared) and its per-task action repeat / learning rates.
PAPER = dict(batch_size=512, replay_capacity=100_000, discount=0.99, feature_dim=50, hidden_dim=1024,
             num_filters=32, num_layers=4, frame_stack=3, image_size=100, crop_size=84, init_temperature=0.1,
             alpha_lr=1e-4, alpha_beta=0.5, actor_beta=0.9, critic_beta=0.9, critic_tau=0.01,
             encoder_tau=0.05, actor_update_every=2, target_update_every=2, log_std_min=-10, log_std_max=2,
             eval_episodes=10)
ACTION_REPEAT = {"cartpole-swingup": 8, "walker-walk": 2, "cheetah-run": 4, "finger-spin": 2,
                 "reacher-easy": 4, "ball_in_cup-catch": 4}
LR = {"cheetah-run": 2e-4}  # every other task 1e-3


@pytest.mark.parametrize("task", ACTION_REPEAT)
def test_shipped_configs_are_the_papers_table(task):
    cfg = config_mod.resolve(task)
    for key, value in PAPER.items():
        assert getattr(cfg, key) == value, key
    assert cfg.action_repeat == ACTION_REPEAT[task]
    lr = LR.get(task, 1e-3)
    assert cfg.actor_lr == cfg.critic_lr == cfg.encoder_lr == lr
    # 1000 agent steps of random actions before the first update
    assert cfg.init_steps == 1000 * ACTION_REPEAT[task]
    assert (cfg.objective, cfg.augment, cfg.curl) == ("curl", "crop", True)
    assert math.isclose(cfg.env_steps, 100_000)
