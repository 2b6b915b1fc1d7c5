"""Every objective of curlrl.objectives against a plain re-statement of its published
formula (loops over samples in float64), limiting cases with known values, float64
gradient checks, permutation invariance, the queues' FIFO order across a resume, the
configuration errors, and agreement with pytorch-metric-learning where it has the loss."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curlrl import objectives as O
from curlrl.errors import ConfigError
from curlrl.options import OBJECTIVE_NAMES, ObjectiveConfig

B, D = 6, 5


def _pair(seed=0, b=B, d=D, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _cos(u, v):
    return float(_unit(u) @ _unit(v))


def _labels(b=B, group=2):
    """episode, time for a batch drawn as groups of ``group`` consecutive frames."""
    episode = torch.arange(b) // group
    time = torch.arange(b) % group
    return episode, time


def _build(name, dtype=torch.float64, **keys):
    cfg = ObjectiveConfig(objective=name, **keys)
    return O.build_objective(cfg, D).to(dtype)


def _call(obj, a, b, **extra):
    """Call with everything any objective may need (the extra inputs are ignored by the others)."""
    if obj.symmetric:
        extra.setdefault("a_key", a.flip(1))
        extra.setdefault("b_online", b.flip(1))
    if obj.needs_groups:
        episode, time = _labels(len(a))
        extra.setdefault("episode", episode)
        extra.setdefault("time", time)
    return obj(a, b, **extra)


# -- each formula, restated ------------------------------------------------------------------
def test_curl_is_the_bilinear_infonce_of_the_existing_head():
    a, b = _pair()
    obj = _build("curl")
    W = obj.W.detach().numpy()
    an, bn = a.numpy(), b.numpy()
    raw = np.array([[an[i] @ W @ bn[j] for j in range(B)] for i in range(B)])
    expected = np.mean([-raw[i, i] + math.log(np.exp(raw[i]).sum()) for i in range(B)])
    loss, metrics = obj(a, b)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert torch.equal(loss, obj.loss(a, b))       # the same ops as CurlHead's, bit for bit
    assert list(obj.state_dict()) == ["W"]          # older checkpoints' curl_head loads


def _ntxent_reference(z, t, tau_plus=None, beta=None):
    """SimCLR / DCL / HCL per view, with loops (z: 2B rows, positives i <-> i +- B)."""
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        p = (i + n) % n2
        pos = math.exp(_cos(z[i], z[p]) / t)
        negs = [_cos(z[i], z[k]) / t for k in range(n2) if k not in (i, p)]
        if tau_plus is None and beta is None:
            ng = sum(math.exp(s) for s in negs)
        else:
            count = len(negs)
            bb = beta or 0.0
            weights = [math.exp(bb * s) for s in negs]
            mean_w = sum(weights) / count
            ng = sum(w / mean_w * math.exp(s) for w, s in zip(weights, negs))
            tp = tau_plus or 0.0
            ng = max((ng - count * tp * pos) / (1 - tp), count * math.exp(-1 / t))
        total += -math.log(pos / (pos + ng))
    return total / n2


@pytest.mark.parametrize("extra", [{}, {"tau_plus": 0.1}, {"hard_beta": 1.0}, {"tau_plus": 0.1, "hard_beta": 0.5}])
def test_infonce_is_ntxent_with_dcl_and_hcl_estimators(extra):
    a, b = _pair(1)
    obj = _build("infonce", projection_dim=0, temperature=0.5, **extra)
    z = torch.cat([a, b]).numpy()
    expected = _ntxent_reference(z, 0.5, extra.get("tau_plus"), extra.get("hard_beta"))
    assert obj(a, b)[0].item() == pytest.approx(expected, rel=1e-10)


def test_infonce_limit_identical_views_orthogonal_negatives():
    # Each sample's two views coincide, different samples are orthogonal: s_ip = 1/t,
    # s_ik = 0, so the loss is log(e^{1/t} + 2B - 2) - 1/t.
    t = 0.2
    z = torch.eye(4, dtype=torch.float64)
    obj = _build("infonce", projection_dim=0, temperature=t)
    loss, metrics = obj(z, z)
    assert loss.item() == pytest.approx(math.log(math.exp(1 / t) + 6) - 1 / t, rel=1e-12)
    assert metrics["accuracy"].item() == 1.0


def test_infonce_projection_head_is_shared_by_both_views():
    a, b = _pair(2)
    obj = _build("infonce")
    with torch.no_grad():
        ha, hb = obj.head(a), obj.head(b)
    plain = _build("infonce", projection_dim=0)
    assert obj(a, b)[0].item() == pytest.approx(plain(ha, hb)[0].item(), rel=1e-10)


def test_moco_against_its_queue_and_enqueues_fifo():
    a, b = _pair(3)
    obj = _build("moco", projection_dim=0, queue_size=8, temperature=0.2)
    queue = obj.queue.clone().numpy()
    loss, _ = obj(a, b)
    expected = 0.0
    for i in range(B):
        q, k = _unit(a[i]), _unit(b[i])
        logits = np.array([q @ k] + [q @ queue[j] for j in range(8)]) / 0.2
        expected += -logits[0] + math.log(np.exp(logits).sum())
    assert loss.item() == pytest.approx(expected / B, rel=1e-10)
    keys = F.normalize(b, dim=1)
    assert torch.allclose(obj.queue[:B], keys) and torch.equal(obj.queue[B:], torch.as_tensor(queue[B:]))
    assert int(obj.queue_ptr) == B
    obj(a[:4], b[:4])                               # wraps: slots 6, 7, 0, 1
    assert torch.allclose(obj.queue[[6, 7, 0, 1]], keys[:4]) and int(obj.queue_ptr) == 2


def test_moco_queue_resumes_in_fifo_order_from_a_state_dict():
    batches = [_pair(10 + i, dtype=torch.float32) for i in range(5)]
    torch.manual_seed(1)
    part = O.build_objective(ObjectiveConfig(objective="moco", queue_size=8), D)
    whole = copy.deepcopy(part)
    for a, b in batches[:3]:
        part(a, b)
    saved = copy.deepcopy(part.state_dict())
    torch.manual_seed(2)                            # a fresh module with other weights and queue
    resumed = O.build_objective(ObjectiveConfig(objective="moco", queue_size=8), D)
    resumed.load_state_dict(saved)
    losses = [resumed(a, b)[0].item() for a, b in batches[3:]]
    for a, b in batches[:3]:
        whole(a, b)
    assert losses == [whole(a, b)[0].item() for a, b in batches[3:]]
    assert torch.equal(resumed.queue, whole.queue)
    assert int(resumed.queue_ptr) == int(whole.queue_ptr) == (5 * B) % 8


def test_moco_refuses_a_batch_larger_than_its_queue():
    a, b = _pair(4)
    with pytest.raises(ValueError, match="queue .* smaller than the batch"):
        _build("moco", queue_size=4)(a, b)


def test_byol_is_the_symmetrised_normalised_regression():
    a, b = _pair(5)
    a_key, b_online = _pair(6)
    obj = _build("byol")
    loss, _ = obj(a, b, a_key=a_key, b_online=b_online)
    with torch.no_grad():
        p_a, p_b = obj.predictor(obj.projector(torch.cat([a, b_online]))).chunk(2)
        t_b, t_a = obj.projector_momentum(torch.cat([b, a_key])).chunk(2)
    expected = np.mean([np.sum((_unit(p_a[i]) - _unit(t_b[i])) ** 2) for i in range(B)]) \
        + np.mean([np.sum((_unit(p_b[i]) - _unit(t_a[i])) ** 2) for i in range(B)])
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_byol_gradients_reach_projector_and_predictor_but_not_the_target():
    a, b = _pair(7)
    a = a.requires_grad_()
    b = b.requires_grad_()
    obj = _build("byol")
    loss, _ = obj(a, b, a_key=b.detach(), b_online=b)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projector.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in obj.projector_momentum.parameters())
    assert a.grad.abs().sum() > 0
    before = [p.clone() for p in obj.projector_momentum.parameters()]
    obj.momentum_update(0.5)
    for old, new, online in zip(before, obj.projector_momentum.parameters(), obj.projector.parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * online.detach())


def test_byol_refuses_to_run_without_its_second_direction():
    a, b = _pair(8)
    with pytest.raises(ValueError, match="symmetrised"):
        _build("byol")(a, b)


def test_barlow_twins_cross_correlation_loss():
    a, b = _pair(9, b=8)
    lam = 0.05
    obj = _build("barlow_twins", projection_dim=0, barlow_lambda=lam)
    an, bn = a.numpy(), b.numpy()
    za = (an - an.mean(0)) / np.sqrt(an.var(0) + 1e-5)
    zb = (bn - bn.mean(0)) / np.sqrt(bn.var(0) + 1e-5)
    c = np.array([[sum(za[n, i] * zb[n, j] for n in range(8)) / 8 for j in range(D)] for i in range(D)])
    expected = sum((1 - c[i, i]) ** 2 for i in range(D)) + lam * sum(
        c[i, j] ** 2 for i in range(D) for j in range(D) if i != j)
    assert obj(a, b)[0].item() == pytest.approx(expected, rel=1e-10)


def test_barlow_twins_collapsed_embedding_costs_its_dimension():
    const = torch.ones(8, D, dtype=torch.float64) * 3.0
    obj = _build("barlow_twins", projection_dim=0)
    assert obj(const, const)[0].item() == pytest.approx(D, abs=1e-12)
    # and perfectly decorrelated, equal views cost ~0
    z = torch.tensor(np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))[0][:, :D] * math.sqrt(8))
    z = z - z.mean(0)
    z = z / z.std(0, unbiased=False)
    # orthogonal columns of zero mean stay orthogonal after centring only if the ones vector is excluded
    c = (z.T @ z / 8).numpy()
    expected = sum((1 - c[i, i]) ** 2 for i in range(D)) + 5e-3 * (np.sum(c ** 2) - np.sum(np.diag(c) ** 2))
    assert obj(z, z)[0].item() == pytest.approx(expected, abs=1e-4)


def test_sinkhorn_uniform_scores_give_uniform_codes_and_equipartition():
    n, k = 6, 4
    q = O.sinkhorn(torch.zeros(n, k, dtype=torch.float64), epsilon=0.05, iterations=3)
    assert torch.allclose(q, torch.full((n, k), 1 / k, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(n, k, generator=g, dtype=torch.float64)
    q = O.sinkhorn(scores, epsilon=0.5, iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(n, dtype=torch.float64))
    assert torch.allclose(q.sum(0), torch.full((k,), n / k, dtype=torch.float64), atol=1e-6)


def _sinkhorn_reference(scores, eps, iters):
    """SwAV's Algorithm 1 (distributed_sinkhorn on one process), in numpy."""
    q = np.exp(np.asarray(scores) / eps).T
    q /= q.sum()
    k, n = q.shape
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= n
    return (q * n).T


def test_sinkhorn_and_swav_swapped_prediction():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(B, 7, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(O.sinkhorn(scores, 0.3, 3).numpy(), _sinkhorn_reference(scores.numpy(), 0.3, 3),
                               rtol=1e-10)
    a, b = _pair(11)
    obj = _build("swav", projection_dim=0, prototypes=7, temperature=0.5, sinkhorn_epsilon=0.3)
    c = F.normalize(obj.prototypes.weight.detach(), dim=1).numpy()
    za = np.stack([_unit(x) for x in a.numpy()])
    zb = np.stack([_unit(x) for x in b.numpy()])
    sa, sb = za @ c.T, zb @ c.T
    qa, qb = _sinkhorn_reference(sa, 0.3, 3), _sinkhorn_reference(sb, 0.3, 3)

    def log_softmax(x):
        x = x / 0.5
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    expected = -0.5 * (np.mean(np.sum(qb * log_softmax(sa), 1)) + np.mean(np.sum(qa * log_softmax(sb), 1)))
    assert obj(a, b)[0].item() == pytest.approx(expected, rel=1e-9)


def test_swav_feature_queue_joins_sinkhorn_once_full():
    obj = _build("swav", queue_size=12, prototypes=5)
    a, b = _pair(12)
    obj(*_pair(30))
    assert int(obj.queue_filled) == B               # not full: codes from the batch alone
    obj(*_pair(31))
    assert int(obj.queue_filled) == 12 and int(obj.queue_ptr) == 0
    loss_with_queue = copy.deepcopy(obj)(a, b)[0]
    no_queue = _build("swav", prototypes=5)
    no_queue.load_state_dict({k: v for k, v in obj.state_dict().items() if not k.startswith("queue")}, strict=False)
    assert loss_with_queue.item() != pytest.approx(no_queue(a, b)[0].item(), rel=1e-6)


def _supcon_reference(z, episode, time, window, t, form):
    n = len(z)
    total = 0.0
    for i in range(n):
        sims = {k: _cos(z[i], z[k]) / t for k in range(n) if k != i}
        den = sum(math.exp(s) for s in sims.values())
        pos = [k for k in sims if episode[k] == episode[i] and abs(time[k] - time[i]) <= window]
        if form == "supcon":
            total += -np.mean([math.log(math.exp(sims[p]) / den) for p in pos])
        else:
            total += -math.log(sum(math.exp(sims[p]) for p in pos) / den)
    return total / n


@pytest.mark.parametrize("form", ["supcon", "snn"])
def test_supcon_with_episode_window_positives(form):
    a, b = _pair(13, b=8)
    episode = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    time = torch.tensor([0, 1, 2, 9, 4, 5, 0, 3])
    obj = _build("supcon", temperature=0.3, supcon_window=2, supcon_form=form)
    loss, metrics = obj(a, b, episode=episode, time=time)
    z = torch.cat([a, b]).numpy()
    expected = _supcon_reference(z, torch.cat([episode, episode]).tolist(), torch.cat([time, time]).tolist(),
                                 2, 0.3, form)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # per view: both views of the frames in its window but itself; frame 3 (time 9) and
    # frames 6, 7 (3 apart) have only their own other view
    assert metrics["positives"].item() == pytest.approx((5 + 5 + 5 + 1 + 3 + 3 + 1 + 1) / 8)


def test_supcon_needs_its_labels():
    a, b = _pair(14)
    with pytest.raises(ValueError, match="episode and time"):
        _build("supcon")(a, b)


def _dist(u, v):
    return float(np.linalg.norm(_unit(u) - _unit(v)))


def test_margin_contrastive_loss():
    a, b = _pair(15)
    obj = _build("contrastive", margin=1.2)
    pos = np.mean([_dist(a[i], b[i]) ** 2 for i in range(B)])
    neg = np.mean([max(0.0, 1.2 - _dist(a[i], b[j])) ** 2 for i in range(B) for j in range(B) if i != j])
    assert obj(a, b)[0].item() == pytest.approx(pos + neg, rel=1e-9)


@pytest.mark.parametrize("mining", ["all", "batch_hard"])
def test_triplet_loss(mining):
    a, b = _pair(16)
    m = 0.7
    obj = _build("triplet", margin=m, triplet_mining=mining)
    d2 = np.array([[_dist(a[i], b[j]) ** 2 for j in range(B)] for i in range(B)])
    if mining == "all":
        expected = np.mean([max(0.0, d2[i, i] - d2[i, j] + m) for i in range(B) for j in range(B) if i != j])
    else:
        expected = np.mean([max(0.0, d2[i, i] - min(d2[i, j] for j in range(B) if j != i) + m) for i in range(B)])
    assert obj(a, b)[0].item() == pytest.approx(expected, rel=1e-9)


def test_npair_loss():
    a, b = _pair(17)
    an, bn = a.numpy(), b.numpy()
    expected = np.mean([math.log(1 + sum(math.exp(an[i] @ bn[j] - an[i] @ bn[i]) for j in range(B) if j != i))
                        for i in range(B)])
    assert _build("npair")(a, b)[0].item() == pytest.approx(expected, rel=1e-10)


def test_lifted_structured_loss_smooth():
    a, b = _pair(18)
    m = 1.0
    z = np.concatenate([a.numpy(), b.numpy()])
    sample = [k % B for k in range(2 * B)]
    total = 0.0
    for i in range(B):
        j = i + B
        terms = [math.exp(m - _dist(z[i], z[k])) for k in range(2 * B) if sample[k] != i]
        terms += [math.exp(m - _dist(z[j], z[k])) for k in range(2 * B) if sample[k] != i]
        big_j = _dist(z[i], z[j]) + math.log(sum(terms))
        total += max(0.0, big_j) ** 2
    assert _build("lifted", margin=m)(a, b)[0].item() == pytest.approx(total / (2 * B), rel=1e-9)


def test_binary_nce_loss():
    a, b = _pair(19)
    t = 0.4

    def log_sigmoid(x):
        return -math.log(1 + math.exp(-x))

    pos = np.mean([log_sigmoid(_cos(a[i], b[i]) / t) for i in range(B)])
    neg = np.mean([log_sigmoid(-_cos(a[i], b[j]) / t) for i in range(B) for j in range(B) if i != j])
    assert _build("nce", temperature=t)(a, b)[0].item() == pytest.approx(-pos - neg, rel=1e-10)


# -- properties every objective shares ------------------------------------------------------------
@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_gradients_match_finite_differences_in_float64(name):
    a, b = _pair(20)
    torch.manual_seed(0)
    obj = _build(name, **({"queue_size": 8} if name == "moco" else {}))
    extra = {}
    if obj.needs_groups:
        extra["episode"], extra["time"] = _labels()

    if name == "swav":
        # SwAV's codes are a stop-gradient target: hold them at the unperturbed inputs' values
        with torch.no_grad():
            probe = copy.deepcopy(obj)
            z = F.normalize(probe.projector(torch.cat([a, b])), dim=1)
            c = F.normalize(probe.prototypes.weight, dim=1)
            fixed = [O.sinkhorn(part @ c.T, probe.epsilon, probe.iterations) for part in z.chunk(2)]
        obj.codes = lambda scores, view: fixed[view]

    def f(x, y):
        # a fresh copy per evaluation: moco and swav write their queues in the forward
        o = copy.deepcopy(obj)
        if o.symmetric:
            return o(x, y, a_key=y.flip(0), b_online=x.flip(0))[0]
        return o(x, y, **extra)[0]

    inputs = (a.clone().requires_grad_(), b.clone().requires_grad_(obj.keys == "online"))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_loss_is_invariant_to_permuting_the_batch(name):
    a, b = _pair(21, dtype=torch.float64)
    torch.manual_seed(0)
    obj = _build(name, **({"queue_size": 8} if name == "moco" else {}))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    extra = {}
    if obj.symmetric:
        extra = dict(a_key=a.flip(1), b_online=b.flip(1))
    if obj.needs_groups:
        episode, time = _labels()
        extra = dict(episode=episode, time=time)
    loss = copy.deepcopy(obj)(a, b, **extra)[0]
    permuted = {k: v[perm] for k, v in extra.items()}
    loss_p = copy.deepcopy(obj)(a[perm], b[perm], **permuted)[0]
    assert loss_p.item() == pytest.approx(loss.item(), rel=1e-9)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_every_objective_returns_a_scalar_and_detached_metrics(name):
    a, b = _pair(22, dtype=torch.float32)
    obj = O.build_objective(ObjectiveConfig(objective=name, **({"queue_size": 8} if name == "moco" else {})), D)
    loss, metrics = _call(obj, a, b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert metrics and all(v.ndim == 0 and not v.requires_grad for v in metrics.values())
    assert O.objective_class(name).name == name


def test_misshapen_features_are_refused_in_words():
    obj = _build("infonce")
    with pytest.raises(ValueError, match=r"two \(B, D\) feature batches"):
        obj(torch.zeros(4, D), torch.zeros(3, D))
    with pytest.raises(ValueError, match="at least 2 samples"):
        obj(torch.zeros(1, D), torch.zeros(1, D))


# -- configuration ------------------------------------------------------------------------------
def test_unknown_objective_names_the_nearest():
    with pytest.raises(ConfigError, match="unknown objective 'bryol' .did you mean 'byol'"):
        O.objective_class("bryol")


def test_a_key_of_another_objective_is_refused():
    with pytest.raises(ConfigError, match="'queue_size' applies to objective=moco or swav, not objective=byol"):
        O.objective_options(ObjectiveConfig(objective="byol", queue_size=256))
    with pytest.raises(ConfigError, match="'temperature' applies to .*not objective=curl"):
        O.objective_options(ObjectiveConfig(temperature=0.1))


def test_objective_defaults_fill_unset_keys():
    opts = O.objective_options(ObjectiveConfig(objective="moco", temperature=0.5))
    assert opts == dict(temperature=0.5, projection_dim=64, projection_hidden=256, queue_size=4096)


def test_settings_impossible_at_the_batch_size():
    with pytest.raises(ConfigError, match="'queue_size' \\(64\\) must be >= batch_size \\(128\\)"):
        O.check_batch(ObjectiveConfig(objective="moco", queue_size=64), 128)
    with pytest.raises(ConfigError, match="'supcon_group' \\(3\\) must divide batch_size \\(128\\)"):
        O.check_batch(ObjectiveConfig(objective="supcon", supcon_group=3), 128)
    O.check_batch(ObjectiveConfig(objective="swav"), 128)  # queue 0: no queue


# -- an outside implementation ------------------------------------------------------------------
def test_ntxent_and_supcon_agree_with_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses", reason="pip install pytorch-metric-learning")
    a, b = _pair(23, b=8, dtype=torch.float64)
    ids = torch.arange(8)
    ours = _build("infonce", projection_dim=0, temperature=0.3)(a, b)[0]
    theirs = pml.NTXentLoss(temperature=0.3)(torch.cat([a, b]), torch.cat([ids, ids]))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    # supcon with a window wider than any episode: "same episode" is a class label
    episode = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    time = torch.tensor([0, 1, 2, 0, 1, 0, 1, 2])
    ours = _build("supcon", temperature=0.3, supcon_window=100)(a, b, episode=episode, time=time)[0]
    theirs = pml.SupConLoss(temperature=0.3)(torch.cat([a, b]), torch.cat([episode, episode]))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
