"""CURL-SAC agent: parameter ownership, tied/detached encoders, targets, state, exact math."""
import io

import numpy as np
import pytest
import torch

from curlrl.agents import AgentConfig, CurlSacAgent
from curlrl.agents.plain import plain_update

SMALL = dict(crop_size=20, feature_dim=8, num_filters=8, hidden_dim=32)
OBS = (9, 24, 24)


def make_agent(seed=0, **kw):
    torch.manual_seed(seed)
    return CurlSacAgent(OBS, 2, AgentConfig(**{**SMALL, **kw}), seed=seed)


def make_batch(seed=0, b=16):
    rng = np.random.default_rng(seed)
    return dict(obs=rng.integers(0, 256, (b, *OBS), dtype=np.uint8),
                next_obs=rng.integers(0, 256, (b, *OBS), dtype=np.uint8),
                action=rng.uniform(-1, 1, (b, 2)).astype(np.float32),
                reward=rng.normal(size=(b, 1)).astype(np.float32),
                not_done=(rng.random((b, 1)) > 0.1).astype(np.float32))


def trainable(agent):
    params = {id(p): p for m in agent.modules().values() for p in m.parameters() if p.requires_grad}
    params[id(agent.log_alpha)] = agent.log_alpha
    return params


@pytest.mark.parametrize("curl,encoder_adam", [(True, "shared"), (False, "shared"), (True, "per_loss")])
def test_every_parameter_belongs_to_exactly_one_optimizer(curl, encoder_adam):
    """One optimizer per parameter; with per_loss the encoder has a second one for CURL gradients only."""
    agent = make_agent(curl=curl, encoder_adam=encoder_adam)
    owners = {}
    for name, opt in agent.optimizers.items():
        if name == "encoder_curl":
            continue
        for group in opt.param_groups:
            for p in group["params"]:
                assert id(p) not in owners, f"parameter in both {owners[id(p)]} and {name}"
                owners[id(p)] = name
    assert set(owners) == set(trainable(agent))
    assert ("curl" in agent.optimizers) == curl
    assert ("encoder_curl" in agent.optimizers) == (curl and encoder_adam == "per_loss")
    if "encoder_curl" in agent.optimizers:
        curl_enc = [p for g in agent.optimizers["encoder_curl"].param_groups for p in g["params"]]
        assert [id(p) for p in curl_enc] == [id(p) for p in agent.encoder.parameters()]
    # targets are never optimised
    target_ids = {id(p) for m in (agent.encoder_target, agent.q_target) for p in m.parameters()}
    assert not target_ids & set(owners)


@pytest.mark.parametrize("mode,encoder_adam,encoder_steps", [("fused", "shared", 1), ("exact", "shared", 2),
                                                             ("exact", "per_loss", 1)])
def test_optimizer_steps_per_update(mode, encoder_adam, encoder_steps):
    agent = make_agent(update_mode=mode, encoder_adam=encoder_adam)
    batch = make_batch()
    agent.update(batch)
    agent.update(batch)  # second update also steps actor and alpha (every 2)
    expected = {"encoder": 2 * encoder_steps, "encoder_curl": 2, "critic": 2, "curl": 2, "actor": 1, "alpha": 1}
    for name, opt in agent.optimizers.items():
        for group in opt.param_groups:
            for p in group["params"]:
                assert int(opt.state[p]["step"]) == expected[name], (name, mode)


def test_actor_conv_is_the_critic_conv_and_the_actor_loss_does_not_train_it():
    agent = make_agent()
    actor_params = {id(p) for g in agent.optimizers["actor"].param_groups for p in g["params"]}
    assert not actor_params & {id(p) for p in agent.encoder.conv.parameters()}
    obs = make_batch()["obs"][0]
    before = agent.act(obs)
    with torch.no_grad():
        agent.encoder.conv.net[0].weight.mul_(2.0)  # the critic's conv drives the actor too
    assert not np.allclose(before, agent.act(obs))
    h = agent.encoder.conv(torch.as_tensor(make_batch()["obs"][:, :, :20, :20])).detach()
    agent.encoder.zero_grad(set_to_none=True)
    agent._update_actor_and_alpha(h)
    assert all(p.grad is None for p in agent.encoder.conv.parameters())


def test_targets_move_only_by_ema_every_second_update():
    agent = make_agent()
    batch = make_batch()
    tq0 = [p.clone() for p in agent.q_target.parameters()]
    agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(tq0, agent.q_target.parameters()))
    agent.update(batch)
    for old, new, online in zip(tq0, agent.q_target.parameters(), agent.q.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * online.detach())


def test_act_is_in_bounds_and_deterministic_without_sampling():
    agent = make_agent()
    obs = make_batch()["obs"]
    a = agent.act(obs[0])
    assert a.shape == (2,) and np.all(np.abs(a) <= 1)
    np.testing.assert_array_equal(a, agent.act(obs[0]))
    assert agent.act(obs).shape == (16, 2)


def _params(agent):
    return {f"{m}.{k}": v.detach().clone() for m, mod in agent.modules().items() for k, v in mod.state_dict().items()}


@pytest.mark.parametrize("mode", ["fused", "exact"])
def test_state_dict_roundtrip_continues_identically(mode):
    a, b = make_agent(update_mode=mode), make_agent(seed=7, update_mode=mode)
    batch = make_batch()
    a.update(batch)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for agent in (a, b):
        torch.manual_seed(123)
        agent.metrics = agent.update(make_batch(1))
    assert a.metrics == b.metrics
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("mode", ["exact", "fused"])
def test_update_metrics_are_detached_device_scalars(mode):
    agent = make_agent(update_mode=mode)
    agent.update(make_batch(0))
    m = agent.update(make_batch(1))  # update 2 also steps actor and alpha
    assert set(m) == {"critic_loss", "q_mean", "curl_loss", "alpha", "actor_loss", "alpha_loss", "entropy"}
    for k, v in m.items():
        assert isinstance(v, torch.Tensor) and v.shape == () and not v.requires_grad, k
        assert v.device == agent.device and np.isfinite(float(v)), k
    assert float(m["alpha"]) == pytest.approx(agent.log_alpha.exp().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["exact", "fused"])
def test_update_on_cuda_never_waits_for_the_device(mode):
    torch.manual_seed(0)
    agent = CurlSacAgent(OBS, 2, AgentConfig(**SMALL, update_mode=mode), device="cuda")
    batch = {k: torch.as_tensor(v, device="cuda") for k, v in make_batch().items()}
    agent.update(batch)  # warm-up: lazy CUDA/cuBLAS initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            agent.update(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_amp_bf16_runs_the_convs_in_bfloat16_and_stays_close_to_float32():
    agents = {amp: make_agent(amp=amp) for amp in ("off", "bf16")}
    seen = {amp: set() for amp in agents}
    for amp, agent in agents.items():
        for enc in (agent.encoder, agent.encoder_target):
            for layer in enc.conv.net:
                if isinstance(layer, torch.nn.Conv2d):
                    layer.register_forward_hook(lambda mod, inp, out, amp=amp: seen[amp].add(out.dtype))
    metrics = {}
    for amp, agent in agents.items():
        torch.manual_seed(1)
        metrics[amp] = agent.update(make_batch())
    assert seen == {"off": {torch.float32}, "bf16": {torch.bfloat16}}
    for k in metrics["off"]:
        assert float(metrics["bf16"][k]) == pytest.approx(float(metrics["off"][k]), rel=0.05, abs=0.02), k
    bf16 = agents["bf16"]
    assert bf16.encoder.conv(torch.zeros(2, *OBS[:1], 20, 20, dtype=torch.uint8)).dtype == torch.float32
    assert all(p.dtype == torch.float32 for m in bf16.modules().values() for p in m.parameters())
    with pytest.raises(ValueError, match="amp"):
        make_agent(amp="fp16")


def test_curl_false_is_pixel_sac_with_crops():
    agent = make_agent(curl=False)
    m = agent.update(make_batch())
    assert agent.curl_head is None and "curl_loss" not in m and np.isfinite(float(m["critic_loss"]))


@pytest.mark.parametrize("encoder_adam", ["shared", "per_loss"])
def test_exact_mode_equals_the_plain_step_by_step_update(encoder_adam):
    fast = make_agent(update_mode="exact", encoder_adam=encoder_adam)
    plain = make_agent(update_mode="exact", encoder_adam=encoder_adam, channels_last=False)
    for step in range(4):
        batch = make_batch(step)
        torch.manual_seed(step)
        m_fast = fast.update(batch)
        torch.manual_seed(step)
        m_plain = plain_update(plain, batch)
        for k, v in m_plain.items():
            assert float(m_fast[k]) == pytest.approx(v, rel=1e-4, abs=1e-5), (step, k)
    pf, pp = _params(fast), _params(plain)
    for k in pf:
        torch.testing.assert_close(pf[k], pp[k], rtol=1e-4, atol=1e-5, msg=k)


def test_per_loss_encoder_adam_sees_only_critic_gradients_in_the_critic_step():
    """With per_loss the encoder's critic Adam state is what pixel SAC without CURL builds
    from the same crops; with shared it also holds the CURL gradient."""
    batch = make_batch(3)
    states = {}
    for name, kw in [("sac", dict(curl=False)), ("per_loss", dict(encoder_adam="per_loss")),
                     ("shared", dict(encoder_adam="shared"))]:
        agent = make_agent(**kw)
        torch.manual_seed(1)  # same policy noise in the target (W's init moved the global RNG)
        agent.update(batch)  # update 1: critic (+ CURL) step, no actor step
        opt = agent.optimizers["encoder"]
        states[name] = [opt.state[p]["exp_avg_sq"].clone() for p in agent.encoder.parameters()]
    for sac, per_loss, shared in zip(states["sac"], states["per_loss"], states["shared"]):
        torch.testing.assert_close(per_loss, sac, rtol=1e-4, atol=1e-10)
    assert any(not torch.allclose(sh, sac, rtol=1e-3, atol=1e-10) for sh, sac in zip(states["shared"], states["sac"]))
