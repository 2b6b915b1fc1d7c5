"""CURL-SAC agent: parameter ownership, tied/detached encoders, targets, state, exact math."""
import io

import numpy as np
import pytest
import torch

from curlrl.agents import AgentConfig, CurlSacAgent
from curlrl.agents.plain import ReferenceCurlSac

SMALL = dict(crop_size=20, feature_dim=8, num_filters=8, hidden_dim=32)
OBS = (9, 24, 24)


def make_agent(seed=0, **kw):
    if kw.get("update_mode") == "fused":
        kw.setdefault("encoder_adam", "shared")  # the only layout fused can have
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


LAYOUTS = [(True, "reference"), (False, "reference"), (True, "per_loss"), (True, "shared"), (False, "shared")]


@pytest.mark.parametrize("curl,encoder_adam", LAYOUTS)
def test_each_loss_reaches_each_parameter_through_one_optimizer(curl, encoder_adam):
    """Without the CURL-only encoder state, every trainable parameter is in exactly one
    optimizer; that state (reference, per_loss) covers exactly the encoder."""
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
    encoder_ids = {id(p) for p in agent.encoder.parameters()}
    # reference: the critic optimizer holds Q + encoder, as the reference's does
    assert {owners[i] for i in encoder_ids} == ({"critic"} if encoder_adam == "reference" else {"encoder"})
    assert ("curl" in agent.optimizers) == curl
    assert ("encoder_curl" in agent.optimizers) == (curl and encoder_adam != "shared")
    if "encoder_curl" in agent.optimizers:
        curl_enc = [p for g in agent.optimizers["encoder_curl"].param_groups for p in g["params"]]
        assert [id(p) for p in curl_enc] == [id(p) for p in agent.encoder.parameters()]
    # targets are never optimised
    target_ids = {id(p) for m in (agent.encoder_target, agent.q_target) for p in m.parameters()}
    assert not target_ids & set(owners)


def test_reference_layout_learning_rates_and_betas():
    """Critic gradient on Q + encoder at critic_lr/critic_beta; CURL gradient at 2 x encoder_lr
    with Adam's default betas (the reference's two identical Adams); W at encoder_lr."""
    agent = make_agent(critic_lr=3e-4, critic_beta=0.8, encoder_lr=5e-4)
    groups = {name: opt.param_groups[0] for name, opt in agent.optimizers.items()}
    assert (groups["critic"]["lr"], groups["critic"]["betas"]) == (3e-4, (0.8, 0.999))
    assert (groups["encoder_curl"]["lr"], groups["encoder_curl"]["betas"]) == (1e-3, (0.9, 0.999))
    assert groups["curl"]["lr"] == 5e-4
    assert make_agent(curl_lr=2e-3).optimizers["curl"].param_groups[0]["lr"] == 2e-3


@pytest.mark.parametrize("mode,encoder_adam", [("fused", "per_loss"), ("fused", "reference")])
def test_fused_needs_the_shared_encoder_state(mode, encoder_adam):
    with pytest.raises(ValueError, match="encoder_adam='shared'"):
        make_agent(update_mode=mode, encoder_adam=encoder_adam)


@pytest.mark.parametrize("mode,encoder_adam,encoder_steps", [("fused", "shared", 1), ("exact", "shared", 2),
                                                             ("exact", "per_loss", 1), ("exact", "reference", 1)])
def test_optimizer_steps_per_update(mode, encoder_adam, encoder_steps):
    agent = make_agent(update_mode=mode, encoder_adam=encoder_adam)
    batch = make_batch()
    agent.update(batch)  # update 0 steps actor and alpha too (every 2, from the first)
    agent.update(batch)
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


def test_targets_move_only_by_ema_every_second_update_from_the_first():
    agent = make_agent()
    batch = make_batch()
    tq0 = [p.clone() for p in agent.q_target.parameters()]
    agent.update(batch)  # update 0: EMA (the reference's first update is at an even agent step)
    for old, new, online in zip(tq0, agent.q_target.parameters(), agent.q.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * online.detach())
    tq1 = [p.clone() for p in agent.q_target.parameters()]
    agent.update(batch)  # update 1: none
    assert all(torch.equal(a, b) for a, b in zip(tq1, agent.q_target.parameters()))


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
    m = agent.update(make_batch(0))  # update 0 also steps actor and alpha
    objective = {"aux_accuracy"} if mode == "exact" else set()  # CURL's own metric; fused skips it
    assert set(m) == {"critic_loss", "q_mean", "curl_loss", "alpha", "actor_loss", "alpha_loss", "entropy"} | objective
    for k, v in m.items():
        assert isinstance(v, torch.Tensor) and v.shape == () and not v.requires_grad, k
        assert v.device == agent.device and np.isfinite(float(v)), k
    assert float(m["alpha"]) == pytest.approx(agent.log_alpha.exp().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["exact", "fused"])
def test_update_on_cuda_never_waits_for_the_device(mode):
    torch.manual_seed(0)
    kw = dict(update_mode=mode, encoder_adam="shared" if mode == "fused" else "reference")
    agent = CurlSacAgent(OBS, 2, AgentConfig(**SMALL, **kw), device="cuda")
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


def _optimizer_moments(opt, params):
    return [(int(opt.state[p]["step"]), opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
            for p in params]


def _assert_moments_close(got, want, what):
    assert len(got) == len(want), what
    for i, ((s1, m1, v1), (s2, m2, v2)) in enumerate(zip(got, want)):
        assert s1 == s2, (what, i)
        torch.testing.assert_close(m1, m2, rtol=1e-4, atol=1e-6, msg=f"{what}[{i}] exp_avg")
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-7, msg=f"{what}[{i}] exp_avg_sq")


def _lockstep(update_a, update_b, updates):
    """Call two update functions on the same batches with the same global RNG draws."""
    for step in range(updates):
        batch = make_batch(step)
        torch.manual_seed(step)
        m_a = update_a(batch)
        torch.manual_seed(step)
        m_b = update_b(batch)
        yield step, m_a, m_b


def _run_against_reference(agent, updates=6):
    """Update ``agent`` and the reference oracle built from it in lockstep; same losses each update."""
    ref = ReferenceCurlSac(agent)
    for step, m_agent, m_ref in _lockstep(agent.update, ref.update, updates):
        assert set(m_ref) <= set(m_agent), step
        for k, v in m_ref.items():
            assert float(m_agent[k]) == pytest.approx(v, rel=1e-4, abs=1e-5), (step, k)
    return ref


@pytest.mark.parametrize("channels_last", [False, True])
def test_default_update_is_the_reference_update(channels_last):
    """Oracle: the reference's update with its own optimizers (critic over Q + encoder; encoder
    and CPC optimizers both stepping the CURL loss), six updates covering actor and EMA steps.
    Same parameters, targets, W, temperature and Adam moments, to float tolerance."""
    agent = make_agent(channels_last=channels_last)
    assert agent.cfg.update_mode == "exact" and agent.cfg.encoder_adam == "reference"
    ref = _run_against_reference(agent)
    pairs = [(agent.encoder, ref.encoder), (agent.encoder_target, ref.encoder_target), (agent.q, ref.q),
             (agent.q_target, ref.q_target), (agent.actor_head, ref.actor_head), (agent.actor, ref.actor),
             (agent.curl_head, ref.curl_head)]
    for mine, theirs in pairs:
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=f"{type(mine).__name__}.{name}")
    torch.testing.assert_close(agent.log_alpha, ref.log_alpha, rtol=1e-5, atol=1e-7)
    enc = list(agent.encoder.parameters())
    # the critic gradient's state on the encoder and Q: the reference's critic optimizer
    _assert_moments_close(_optimizer_moments(agent.optimizers["critic"], [*agent.q.parameters(), *enc]),
                          _optimizer_moments(ref.critic_optimizer, [*ref.q.parameters(), *ref.encoder.parameters()]),
                          "critic")
    # the reference's two CURL optimizers hold identical encoder moments; ours is one of them at 2x lr
    ref_enc = list(ref.encoder.parameters())
    _assert_moments_close(_optimizer_moments(ref.cpc_optimizer, ref_enc),
                          _optimizer_moments(ref.encoder_optimizer, ref_enc), "reference's two CURL states")
    _assert_moments_close(_optimizer_moments(agent.optimizers["encoder_curl"], enc),
                          _optimizer_moments(ref.encoder_optimizer, ref_enc), "encoder_curl")
    _assert_moments_close(_optimizer_moments(agent.optimizers["curl"], [agent.curl_head.W]),
                          _optimizer_moments(ref.cpc_optimizer, [ref.curl_head.W]), "W")
    _assert_moments_close(
        _optimizer_moments(agent.optimizers["actor"], [*agent.actor_head.parameters(), *agent.actor.parameters()]),
        _optimizer_moments(ref.actor_optimizer, [*ref.actor_head.parameters(), *ref.actor.parameters()]), "actor")
    # the shared conv weights got no actor gradient in the reference either
    assert all(float(ref.actor_optimizer.state[p]["exp_avg"].abs().max()) == 0 for p in ref.encoder.conv.parameters())


@pytest.mark.parametrize("kw", [dict(encoder_adam="per_loss"), dict(encoder_adam="shared"),
                                dict(update_mode="fused", encoder_adam="shared")])
def test_variants_differ_from_the_reference_update(kw):
    """The oracle can fail: each named variant drifts from the reference within six updates."""
    agent = make_agent(**kw)
    ref = ReferenceCurlSac(agent)
    for _ in _lockstep(agent.update, ref.update, 6):
        pass
    diff = max(float((p - q).detach().abs().max())
               for p, q in zip(agent.encoder.parameters(), ref.encoder.parameters()))
    assert diff > 1e-4, kw


def test_actor_head_has_the_reference_init():
    """Orthogonal Linear weight, zero bias, LayerNorm (1, 0): the reference's weight_init on the whole actor."""
    agent = make_agent(feature_dim=8)
    w = agent.actor_head.linear.weight
    torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), rtol=0, atol=1e-5)
    assert torch.equal(agent.actor_head.linear.bias, torch.zeros_like(agent.actor_head.linear.bias))
    assert torch.equal(agent.actor_head.norm.weight, torch.ones(8))


def test_encoder_state_of_the_critic_sees_only_critic_gradients():
    """With reference and per_loss the critic's Adam state on the encoder is what pixel SAC
    without CURL builds from the same crops; with shared it also holds the CURL gradient."""
    batch = make_batch(3)
    states = {}
    for name, kw in [("sac", dict(curl=False)), ("reference", {}), ("per_loss", dict(encoder_adam="per_loss")),
                     ("shared", dict(encoder_adam="shared"))]:
        agent = make_agent(**kw)
        torch.manual_seed(1)  # same policy noise in the target (W's init moved the global RNG)
        agent.update(batch)
        opt = agent.optimizers["encoder" if "encoder" in agent.optimizers else "critic"]
        states[name] = [opt.state[p]["exp_avg_sq"].clone() for p in agent.encoder.parameters()]
    for name in ("reference", "per_loss"):
        for mine, sac in zip(states[name], states["sac"]):
            torch.testing.assert_close(mine, sac, rtol=1e-4, atol=1e-10)
    assert any(not torch.allclose(sh, sac, rtol=1e-3, atol=1e-10) for sh, sac in zip(states["shared"], states["sac"]))


def _compiled_matches_eager(updates=3):
    eager, compiled = make_agent(), make_agent(capture="compile")
    for step, m_eager, m_compiled in _lockstep(eager.update, compiled.update, updates):
        for k in m_eager:
            assert float(m_compiled[k]) == pytest.approx(float(m_eager[k]), rel=1e-4, abs=1e-5), (step, k)
    pe, pc = _params(eager), _params(compiled)
    assert set(pe) == set(pc)  # compiled networks keep their parameter names (checkpoints unchanged)
    for k in pe:
        torch.testing.assert_close(pc[k], pe[k], rtol=1e-4, atol=1e-6, msg=k)
    obs = make_batch(9)["obs"][:2]
    np.testing.assert_allclose(compiled.act(obs), eager.act(obs), rtol=1e-4, atol=1e-5)


def test_captured_update_computes_the_eager_update_graph_capture_only(monkeypatch):
    """capture=compile: the networks are captured by dynamo/AOTAutograd (forward and backward
    graphs) and replayed; same update as eager. aot_eager skips code generation, so this is fast;
    the inductor-compiled version is the slow test below."""
    monkeypatch.setattr(CurlSacAgent, "compile_options", lambda self: {"backend": "aot_eager"})
    torch._dynamo.reset()
    _compiled_matches_eager()


@pytest.mark.slow
def test_captured_update_computes_the_eager_update_inductor():
    """The real capture=compile path (inductor kernels; C++ on the CPU): ~1-2 min of compilation."""
    torch._dynamo.reset()
    _compiled_matches_eager()


def test_capture_values_are_checked():
    with pytest.raises(ValueError, match="capture must be one of"):
        make_agent(capture="graphs")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        make_agent(capture="cudagraphs")
