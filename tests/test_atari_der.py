"""DER (+ CURL) on Atari frame stacks: the C51 projection, noisy layers, the update, resume and
a learning check that fails when the distributional target is wrong."""
import io
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curlrl.agents.der import (DerAgent, DerConfig, DerNetwork, NoisyLinear, c51_projection, curl_weight_for)
from curlrl.errors import CheckpointError, ConfigError
from curlrl.per import PrioritizedReplay

SUPPORT3 = torch.tensor([-1.0, 0.0, 1.0])


# -- the C51 projection ------------------------------------------------------------
def test_c51_projection_matches_a_hand_computation():
    p = torch.tensor([[0.2, 0.3, 0.5]] * 5)
    returns = torch.tensor([0.1, 0.5, 2.0, 0.0, -1.0])
    discount = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0])
    m = c51_projection(p, returns, discount, SUPPORT3)
    # row 0: Tz = 0.1 + 0.5 z = (-0.4, 0.1, 0.6), b = Tz + 1 = (0.6, 1.1, 1.6):
    #   0.2 -> atom 0: 0.4 * 0.2, atom 1: 0.6 * 0.2;  0.3 -> atom 1: 0.9 * 0.3, atom 2: 0.1 * 0.3;
    #   0.5 -> atom 1: 0.4 * 0.5, atom 2: 0.6 * 0.5
    # row 1: terminal, R = 0.5: all the mass at b = 1.5, half on atom 1, half on atom 2
    # row 2: R = 2 is clamped to v_max = 1: b = 2 is an atom (l = u): all on atom 2
    # row 3: R = 0 on the interior atom; row 4: R = -1 on the lowest atom
    want = torch.tensor([[0.08, 0.12 + 0.27 + 0.20, 0.03 + 0.30],
                         [0.0, 0.5, 0.5],
                         [0.0, 0.0, 1.0],
                         [0.0, 1.0, 0.0],
                         [1.0, 0.0, 0.0]])
    torch.testing.assert_close(m, want)
    torch.testing.assert_close(m.sum(1), torch.ones(5))
    # the mean moves as the Bellman operator says when nothing is clamped: E[Tz] = R + discount E[Z]
    assert (m[0] * SUPPORT3).sum().item() == pytest.approx(0.1 + 0.5 * (0.5 - 0.2))


# -- noisy layers and the network ----------------------------------------------------
def test_noisy_layers_are_deterministic_in_eval_and_stochastic_in_train():
    torch.manual_seed(0)
    layer = NoisyLinear(16, 8, sigma0=0.1)
    assert torch.allclose(layer.weight_sigma, torch.full((8, 16), 0.1 / 4.0))
    assert torch.allclose(layer.bias_sigma, torch.full((8,), 0.1 / math.sqrt(8)))
    x = torch.randn(5, 16)
    gen = torch.Generator().manual_seed(1)
    layer.reset_noise(gen)
    # factorised: eps_W = f(eps_out) f(eps_in)^T, eps_b = f(eps_out), f(x) = sgn(x) sqrt|x|
    again = torch.Generator().manual_seed(1)

    def f(v):
        return v.sign() * v.abs().sqrt()

    eps_in, eps_out = f(torch.randn(16, generator=again)), f(torch.randn(8, generator=again))
    torch.testing.assert_close(layer.weight_epsilon, torch.outer(eps_out, eps_in))
    torch.testing.assert_close(layer.bias_epsilon, eps_out)

    layer.train()
    y1, y1_again = layer(x), layer(x)
    assert torch.equal(y1, y1_again)  # the noise changes only when drawn
    layer.reset_noise(gen)
    assert not torch.allclose(layer(x), y1)
    layer.eval()
    y_eval = layer(x)
    layer.reset_noise(gen)
    assert torch.equal(layer(x), y_eval)
    torch.testing.assert_close(y_eval, F.linear(x, layer.weight_mu, layer.bias_mu))


def test_the_network_is_ders_with_dueling_c51_heads():
    net = DerNetwork(num_actions=6, curl_dim=128)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    h = net.features(obs)
    assert h.shape == (3, 576)
    convs = [m for m in net.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == \
        [(4, 32, (5, 5), (5, 5)), (32, 64, (5, 5), (5, 5))]
    assert net.logits(h).shape == (3, 6, 51)
    probs = net(obs)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 6))
    assert net.projection(h).shape == (3, 128)
    # dueling: adding a constant to every action's advantage leaves the logits unchanged
    with torch.no_grad():
        net.advantage_out.bias_mu += 0.7 * torch.ones_like(net.advantage_out.bias_mu)
    torch.testing.assert_close(net(obs), probs)


# -- the agent -----------------------------------------------------------------------
def fake_batch(size=8, seed=0, num_actions=4) -> dict:
    rng = np.random.default_rng(seed)
    return {"obs": rng.integers(0, 256, (size, 4, 84, 84), dtype=np.uint8),
            "next_obs": rng.integers(0, 256, (size, 4, 84, 84), dtype=np.uint8),
            "action": rng.integers(0, num_actions, size), "returns": rng.normal(size=size).astype(np.float32),
            "discount": np.where(rng.random(size) < 0.2, 0.0, 0.99 ** 20).astype(np.float32),
            "weight": rng.uniform(0.2, 1.0, size).astype(np.float32)}


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("curl", [False, True])
def test_an_update_moves_the_online_net_and_the_target_only_at_the_copy_period(curl):
    agent = DerAgent(4, DerConfig(curl=curl, target_update=3, lr=1e-3), seed=0)
    target0, online0 = params(agent.target), params(agent.online)
    assert all(torch.equal(a, b) for a, b in zip(target0, online0))
    for k in range(3):
        m = agent.update(fake_batch(seed=k))
        online = params(agent.online)
        if k < 2:
            assert any(not torch.equal(a, b) for a, b in zip(online, online0))
            assert all(torch.equal(a, b) for a, b in zip(params(agent.target), target0))
        else:  # after the 3rd update: the hard copy
            assert all(torch.equal(a, b) for a, b in zip(params(agent.target), online))
    # the loss is the IS-weighted mean of the per-sample losses, which are the priorities
    b = fake_batch(seed=9)
    m = agent.update(b)
    assert m["loss"].item() == pytest.approx(float(np.mean(b["weight"] * m["priorities"])), rel=1e-5)
    if curl:  # CURL's batch loss (times its weight) is in every sample's priority
        diff = m["priorities"] - agent.cfg.curl_weight * m["curl_loss"].item()
        assert m["c51_loss"].item() == pytest.approx(float(diff.mean()), rel=1e-5)


def test_the_momentum_encoder_is_an_ema_of_the_online_encoder_after_each_update():
    agent = DerAgent(4, DerConfig(curl=True, encoder_tau=0.001, lr=1e-3), seed=0)
    key0 = params(agent.momentum)
    agent.update(fake_batch())
    online = params(agent._key_modules(agent.online))
    for k, k0, o in zip(params(agent.momentum), key0, online):
        torch.testing.assert_close(k, 0.999 * k0 + 0.001 * o)


def test_acting_in_eval_is_deterministic_and_in_training_noisy():
    agent = DerAgent(6, DerConfig(curl=False, eval_epsilon=0.0), seed=0)
    obs = np.random.default_rng(0).integers(0, 256, (16, 4, 84, 84), dtype=np.uint8)
    first = agent.act(obs, eval=True)
    assert np.array_equal(agent.act(obs, eval=True), first)
    assert np.array_equal(first, agent.q_values(obs).argmax(1).numpy())
    assert isinstance(agent.act(obs[0], eval=True), int)
    noise = agent.online.value_hidden.weight_epsilon.clone()
    agent.act(obs[0])
    assert not torch.equal(agent.online.value_hidden.weight_epsilon, noise)  # fresh noise per training act
    q_noisy = [agent.q_values(obs, noise=True) for _ in range(2)]
    assert torch.equal(q_noisy[0], q_noisy[1]) and not torch.allclose(q_noisy[0], agent.q_values(obs))
    greedy = DerAgent(6, DerConfig(curl=False, eval_epsilon=1.0), seed=0)
    picks = greedy.act(np.repeat(obs[:1], 600, axis=0), eval=True)
    assert set(picks.tolist()) == set(range(6))  # epsilon 1: uniform over the actions


def test_the_curl_weight_is_the_codes_not_the_papers():
    assert [curl_weight_for(g) for g in ("pong", "atari-boxing", "PrivateEye", "freeway", "breakout")] == \
        [0.01, 0.01, 0.01, 0.01, 1.0]
    assert DerConfig.for_game("atari-private_eye").curl_weight == 0.01
    assert DerConfig.for_game("alien", lr=2e-4).lr == 2e-4
    cfg = DerConfig()
    assert (cfg.n_step, cfg.discount, cfg.lr, cfg.adam_eps, cfg.grad_clip, cfg.batch_size, cfg.target_update,
            cfg.learn_start, cfg.priority_alpha, cfg.priority_beta, cfg.noisy_sigma0, cfg.num_atoms, cfg.v_min,
            cfg.v_max, cfg.hidden_dim, cfg.encoder_tau) == \
        (20, 0.99, 1e-4, 1.5e-4, 10.0, 32, 2000, 1600, 0.5, 0.4, 0.1, 51, -10.0, 10.0, 256, 0.001)
    agent = DerAgent(4, DerConfig(curl=False))
    assert agent.beta == pytest.approx(0.4 + 0.6 / 98_400)
    agent.updates = 98_399
    assert agent.beta == 1.0


def _filled_replay(seed=0) -> PrioritizedReplay:
    rng = np.random.default_rng(seed)
    rep = PrioritizedReplay(500, n_step=3, discount=0.99, seed=seed)
    for ep in range(6):
        obs = np.repeat(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8), 4, axis=0)
        for t in range(12):
            nxt = np.concatenate([obs[1:], rng.integers(0, 256, (1, 84, 84), dtype=np.uint8)])
            rep.add(obs, int(rng.integers(4)), float(rng.normal()), nxt, t == 11 and ep % 2 == 0,
                    t == 11 and ep % 2 == 1)
            obs = nxt
    return rep


def _train(agent: DerAgent, rep: PrioritizedReplay, steps: int) -> list[dict]:
    out = []
    for _ in range(steps):
        batch = rep.sample(8, agent.beta)
        m = agent.update(batch)
        rep.update_priorities(batch["index"], m["priorities"])
        out.append({"index": batch["index"], **m})
    return out


@pytest.mark.parametrize("curl, objective", [(False, "curl"), (True, "curl"), (True, "moco"), (True, "byol")])
def test_a_resumed_agent_and_replay_make_bit_identical_updates(curl, objective):
    # moco: its key queue (and pointer) resume in FIFO order; byol: its momentum projector and predictor
    extra = {"queue_size": 64} if objective == "moco" else {}
    cfg = DerConfig(curl=curl, target_update=2, lr=1e-3, objective=objective, **extra)
    agent, rep = DerAgent(4, cfg, seed=3), _filled_replay()
    _train(agent, rep, 3)
    agent_file, replay_file = io.BytesIO(), io.BytesIO()
    torch.save(agent.state_dict(), agent_file)
    np.savez(replay_file, **rep.state_dict())
    expected = _train(agent, rep, 3)
    expected_act = agent.act(rep.sample(1, 0.5)["obs"][0]), agent.act(rep.sample(4, 0.5)["obs"], eval=True)

    agent_file.seek(0)
    replay_file.seek(0)
    resumed, rep2 = DerAgent(4, cfg, seed=77), PrioritizedReplay(500, n_step=3, discount=0.99, seed=5)
    resumed.load_state_dict(torch.load(agent_file, weights_only=True))
    rep2.load_state_dict(dict(np.load(replay_file)))
    got = _train(resumed, rep2, 3)
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
            a, b = want[key], have[key]
            assert (torch.equal(a, b) if torch.is_tensor(a) else np.array_equal(a, b)), key
    for a, b in zip(params(agent.online), params(resumed.online)):
        assert torch.equal(a, b)
    for a, b in zip(params(agent.target), params(resumed.target)):
        assert torch.equal(a, b)
    if agent.objective is not None:
        sa, sb = agent.objective.state_dict(), resumed.objective.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    got_act = resumed.act(rep2.sample(1, 0.5)["obs"][0]), resumed.act(rep2.sample(4, 0.5)["obs"], eval=True)
    assert got_act[0] == expected_act[0] and np.array_equal(got_act[1], expected_act[1])


def test_bad_inputs_raise_curlrl_errors():
    with pytest.raises(ConfigError, match="config key 'n_step' must be > 0, got 0"):
        DerConfig(n_step=0)
    with pytest.raises(ConfigError, match="'v_min'"):
        DerConfig(v_min=1.0, v_max=-1.0)
    with pytest.raises(ConfigError, match="num_actions >= 1"):
        DerAgent(0)
    agent = DerAgent(4, DerConfig(curl=False))
    with pytest.raises(ConfigError, match=r"uint8 \(C, 84, 84\)"):
        agent.act(np.zeros((4, 84, 84), dtype=np.float32))
    batch = fake_batch()
    with pytest.raises(ConfigError, match="the batch has no weight"):
        agent.update({k: v for k, v in batch.items() if k != "weight"})
    with pytest.raises(ConfigError, match=r"actions must be in \[0, 4\)"):
        agent.update({**batch, "action": np.full(8, 4)})
    with pytest.raises(ConfigError, match=r"'returns' must have shape \(8,\)"):
        agent.update({**batch, "returns": np.zeros((8, 1), dtype=np.float32)})
    with pytest.raises(CheckpointError, match="does not fit this agent"):
        agent.load_state_dict(DerAgent(4, DerConfig(curl=True)).state_dict())
    with pytest.raises(CheckpointError, match="does not fit this agent"):
        agent.load_state_dict(DerAgent(6, DerConfig(curl=False)).state_dict())


# -- learning: a two-state MDP whose values need a correct distributional target -------
GAMMA = 0.5
# s0: a0 -> s1 (r 0), a1 -> end (r 0.3, between atoms); s1: a0 -> end (r 1.0), a1 -> end (r -0.4, on an atom)
TRUE_Q = np.array([[GAMMA * 1.0, 0.3], [1.0, -0.4]])


class TwoStateMDP:
    """Frame-stack observations of a 2-state, 2-action MDP (random 84x84 frames per state)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 256, (84, 84), dtype=np.uint8) for _ in range(3)]

    def reset(self) -> np.ndarray:
        self.state, self.stack = 0, [self.frames[0]] * 4
        return np.stack(self.stack)

    def step(self, action: int):
        if self.state == 0 and action == 0:
            self.state, self.stack = 1, self.stack[1:] + [self.frames[1]]
            return np.stack(self.stack), 0.0, False
        reward = {(0, 1): 0.3, (1, 0): 1.0, (1, 1): -0.4}[(self.state, action)]
        self.stack = self.stack[1:] + [self.frames[2]]
        return np.stack(self.stack), reward, True

    def observations(self) -> np.ndarray:
        s0 = self.reset()
        s1, _, _ = self.step(0)
        return np.stack([s0, s1])


def _support_split(agent, returns, discount):
    n, z = agent.support.numel(), agent.support
    tz = (returns[:, None] + discount[:, None] * z).clamp(z[0], z[-1])
    b = (tz - z[0]) / ((z[-1] - z[0]) / (n - 1))
    return b, b.floor().long(), b.ceil().long()


class SwappedSplit(DerAgent):
    """Broken: each atom's mass is split between its neighbours the wrong way round."""

    def project(self, next_probs, returns, discount):
        b, lo, hi = _support_split(self, returns, discount)
        n = self.support.numel()
        lo[(hi > 0) & (lo == hi)] -= 1
        hi[(lo < n - 1) & (lo == hi)] += 1
        m = torch.zeros_like(next_probs)
        m.scatter_add_(1, lo, next_probs * (b - lo.float()))
        return m.scatter_add_(1, hi, next_probs * (hi.float() - b))


class MassVanishesOnAtoms(DerAgent):
    """Broken: no fix for l == u, so a target that lands on an atom carries no mass."""

    def project(self, next_probs, returns, discount):
        b, lo, hi = _support_split(self, returns, discount)
        m = torch.zeros_like(next_probs)
        m.scatter_add_(1, lo, next_probs * (hi.float() - b))
        return m.scatter_add_(1, hi, next_probs * (b - lo.float()))


class UndiscountedSupport(DerAgent):
    """Broken: bootstraps R + Z instead of R + gamma^n Z."""

    def project(self, next_probs, returns, discount):
        return c51_projection(next_probs, returns, (discount > 0).float(), self.support)


def _learned_q(agent_class, updates=250, curl=False) -> np.ndarray:
    cfg = DerConfig(curl=curl, n_step=1, discount=GAMMA, lr=1e-3, target_update=25)
    agent, env = agent_class(2, cfg, seed=0), TwoStateMDP()
    rep = PrioritizedReplay(2000, n_step=1, discount=GAMMA, alpha=cfg.priority_alpha, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):  # uniform random data: every (state, action) is well covered
        obs, done = env.reset(), False
        while not done:
            action = int(rng.integers(2))
            nxt, reward, done = env.step(action)
            rep.add(obs, action, reward, nxt, done, False)
            obs = nxt
    qs = []
    for k in range(updates):
        batch = rep.sample(32, agent.beta)
        rep.update_priorities(batch["index"], agent.update(batch)["priorities"])
        if k >= updates - 100 and k % 10 == 9:  # average the last evaluations (noise off)
            qs.append(agent.q_values(env.observations()).numpy())
    return np.mean(qs, axis=0)


def test_der_learns_the_true_values_and_a_broken_target_does_not():
    q = _learned_q(DerAgent)
    assert np.abs(q - TRUE_Q).max() < 0.1, q
    assert q[0].argmax() == 0 and q[1].argmax() == 0  # bootstrapping finds the better first move
    for broken in (SwappedSplit, MassVanishesOnAtoms, UndiscountedSupport):
        q_broken = _learned_q(broken)
        assert np.abs(q_broken - TRUE_Q).max() > 0.25, (broken.__name__, q_broken)


def test_curl_der_learns_the_true_values_too():
    # the contrastive loss shares the encoder and sits in every priority; the RL target still converges
    q = _learned_q(DerAgent, curl=True)
    assert np.abs(q - TRUE_Q).max() < 0.1, q


def test_another_objective_replaces_curls_head_on_the_conv_features():
    """objective=NAME: curlrl.objectives' module on the 576 conv features, its parameters in
    the agent's one Adam, its momentum heads EMA'd with the key encoder; the loss it adds to
    every sample is the objective's own value on the two shifted views."""
    from curlrl.objectives import BYOL, InfoNCE

    rep = _filled_replay()
    agent = DerAgent(4, DerConfig(objective="infonce", lr=1e-3), seed=0)
    assert isinstance(agent.objective, InfoNCE) and agent.curl_head is None and agent.online.projection is None
    own = {id(p) for p in agent.objective.parameters()}
    assert own <= {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
    batch = rep.sample(8, 0.5)
    m = agent.update(batch)
    assert "aux_accuracy" in m and float(m["curl_loss"]) > 0
    # per-sample priority = C51 cross-entropy + weight x the objective's batch loss
    assert m["priorities"].mean() == pytest.approx(float(m["c51_loss"]) + 1.0 * float(m["curl_loss"]), rel=1e-5)
    byol = DerAgent(4, DerConfig(objective="byol", encoder_tau=0.5), seed=0)
    assert isinstance(byol.objective, BYOL)
    before = [p.detach().clone() for p in byol.objective.projector_momentum.parameters()]
    byol.update(rep.sample(8, 0.5))
    online = list(byol.objective.projector.parameters())
    for b0, t, o in zip(before, byol.objective.projector_momentum.parameters(), online):
        torch.testing.assert_close(t, 0.5 * b0 + 0.5 * o.detach())  # EMA at encoder_tau after the step


@pytest.mark.parametrize("overrides, words", [
    (dict(objective="supcon"), "needs batches of frames from one episode window"),
    (dict(curl=False, objective="byol"), "needs curl=true"),
    (dict(objective="moco", queue_size=16), "'queue_size' (16) must be >= batch_size (32)"),
    (dict(objective="curl", temperature=0.1), "applies to objective="),
])
def test_objective_settings_der_cannot_run_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        DerConfig(**overrides)
