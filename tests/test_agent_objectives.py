"""The objectives inside the agent and `curlrl train`: which networks each one trains, the
episode-window sampler supcon needs, bit-exact resume of two objectives other than curl,
and the configuration mistakes (one line, exit 2, nothing written)."""
import copy

import numpy as np
import pytest
import torch
from conftest import one_line_error
from test_agent import make_agent, make_batch
from test_train_cli import TINY, curlrl, rows

from curlrl.jobs.rundir import RunDir
from curlrl.options import OBJECTIVE_NAMES
from curlrl.replay import DeviceReplayBuffer, ReplayBuffer


def _with_labels(batch, group=4):
    b = len(batch["obs"])
    return {**batch, "episode": np.arange(b) // group, "time": np.arange(b) % group}


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_each_objective_trains_the_encoder_and_its_own_parameters(name):
    agent = make_agent(objective=name, **({"queue_size": 16} if name == "moco" else {}))
    assert agent.objective.name == name and (agent.curl_head is not None) == (name == "curl")
    key = "curl_head" if name == "curl" else "objective"
    assert agent.modules()[key] is agent.objective
    own = [p for p in agent.objective.parameters() if p.requires_grad]
    before_own = [p.detach().clone() for p in own]
    before_enc = copy.deepcopy(agent.encoder.state_dict())
    batch = make_batch(0)
    m = agent.update(_with_labels(batch) if agent.objective.needs_groups else batch)
    assert np.isfinite(float(m["curl_loss"]))
    assert all(not torch.equal(a, p) for a, p in zip(before_own, own))
    # the encoder moves by the critic and the objective: compare with the same update without it
    plain = make_agent(curl=False)
    plain.encoder.load_state_dict(before_enc)
    plain.update(batch)
    assert any(not torch.equal(agent.encoder.state_dict()[k], plain.encoder.state_dict()[k]) for k in before_enc)
    # only objectives that have parameters get an Adam of their own
    opt = "curl" if name == "curl" else "objective"
    assert (opt in agent.optimizers) == bool(own)


def test_byol_and_moco_heads_follow_the_online_heads_by_ema_at_target_steps():
    for name, online, momentum in (("byol", "projector", "projector_momentum"), ("moco", "head", "head_momentum")):
        agent = make_agent(objective=name, encoder_tau=0.25, **({"queue_size": 16} if name == "moco" else {}))
        obj = agent.objective

        def snap(module, obj=obj):
            return [p.detach().clone() for p in getattr(obj, module).parameters()]

        start = snap(momentum)
        agent.update(make_batch(0))  # a target step, but the heads are still equal: the EMA changes nothing
        agent.update(make_batch(1))  # no target step
        assert all(torch.equal(a, b) for a, b in zip(start, snap(momentum))), name
        online_now = snap(online)
        assert any(not torch.equal(a, b) for a, b in zip(start, online_now)), name  # the objective trained it
        agent.update(make_batch(2))  # a target step: EMA toward the online head before this update's objective step
        for s0, o, m in zip(start, online_now, snap(momentum)):
            assert torch.allclose(m, 0.75 * s0 + 0.25 * o, rtol=0, atol=1e-6), name
        assert not any(p.requires_grad for p in getattr(obj, momentum).parameters())


def test_objective_keys_are_refused_by_the_agent_where_they_cannot_apply():
    with pytest.raises(ValueError, match="needs curl=true"):
        make_agent(curl=False, objective="byol")
    with pytest.raises(ValueError, match="does not apply to objective=moco"):
        make_agent(objective="moco", update_mode="fused")
    agent = make_agent(objective="supcon")
    with pytest.raises(ValueError, match="episode windows"):
        agent.update(make_batch(0))


def _filled(buffer, episodes=(7, 3, 12)):
    rng = np.random.default_rng(0)
    frame = lambda: rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)  # noqa: E731
    for length in episodes:
        obs = np.concatenate([frame(), frame(), frame()])
        for t in range(length):
            nxt = np.concatenate([obs[3:], frame()])
            buffer.add(obs, np.zeros(2, np.float32), float(t), nxt, False, t == length - 1)
            obs = nxt
    return buffer


@pytest.mark.parametrize("storage", ["host", "device"])
def test_sample_windows_draws_groups_of_one_episode_window(storage):
    kind = ReplayBuffer if storage == "host" else DeviceReplayBuffer
    buffer = _filled(kind(100, (3, 8, 8), 2, seed=0, **({} if storage == "host" else {"device": "cpu"})))
    starts = {0: 0, 7: 7, 10: 10}  # transition index of each episode's first transition
    lengths = {0: 7, 7: 3, 10: 12}
    for _ in range(20):
        batch = buffer.sample_windows(12, group=4, window=2)
        episode, time = np.asarray(batch["episode"]), np.asarray(batch["time"])
        reward = np.asarray(torch.as_tensor(batch["reward"]).cpu())[:, 0]
        assert np.array_equal(reward, time)  # reward t was stored at position t: the labels name the frame
        for g in range(3):
            e, t = episode[4 * g:4 * g + 4], time[4 * g:4 * g + 4]
            assert len(set(e)) == 1 and e[0] in starts  # one episode per group
            assert np.all(np.abs(t - t[0]) <= 2) and np.all(t < lengths[e[0]]) and np.all(t >= 0)
    with pytest.raises(ValueError, match="must divide"):
        buffer.sample_windows(10, group=4, window=2)


def test_sample_windows_reaches_every_offset_and_falls_back_to_the_anchor():
    buffer = _filled(ReplayBuffer(100, (3, 8, 8), 2, seed=1), episodes=(1, 50))
    offsets = set()
    for _ in range(200):
        batch = buffer.sample_windows(8, group=2, window=3)
        e, t = batch["episode"].reshape(-1, 2), batch["time"].reshape(-1, 2)
        assert np.all(e[:, 0] == e[:, 1])
        offsets.update((t[:, 1] - t[:, 0]).tolist())
        one = e[:, 0] == 0  # the one-transition episode: every member is the anchor itself
        assert np.all(t[one] == 0)
    assert offsets == set(range(-3, 4))


# -- through the command ------------------------------------------------------------------------
@pytest.mark.parametrize("objective", [["objective=moco", "queue_size=64"], ["objective=supcon"]])
def test_an_objective_run_resumes_like_the_uninterrupted_run(objective, tmp_path):
    args = [*TINY, "eval_every=1000", *objective]
    full, part = tmp_path / "full", tmp_path / "part"
    for run, steps in ((full, 2000), (part, 1000)):
        res = curlrl("train", "cartpole-swingup", "--run-dir", str(run), f"env_steps={steps}", *args)
        assert res.returncode == 0, res.stderr
    res = curlrl("train", "--resume", "--run-dir", str(part), "env_steps=2000")
    assert res.returncode == 0, res.stderr
    for name, cols in (("eval.csv", ["env_step", "updates", "return"]),
                       ("train.csv", ["env_step", "updates", "episode", "return", "critic_loss", "curl_loss"])):
        got = [[r[c] for c in cols] for r in rows(part / name)]
        want = [[r[c] for c in cols] for r in rows(full / name)]
        assert got == want, name
    a = torch.load(RunDir(part).checkpoint_path, weights_only=True)["agent"]
    b = torch.load(RunDir(full).checkpoint_path, weights_only=True)["agent"]
    assert set(a["modules"]) == set(b["modules"]) and "objective" in a["modules"]
    for mod in a["modules"]:
        assert all(torch.equal(a["modules"][mod][k], b["modules"][mod][k]) for k in a["modules"][mod]), mod
    if "queue" in a["modules"]["objective"]:
        assert int(a["modules"]["objective"]["queue_ptr"]) == int(b["modules"]["objective"]["queue_ptr"])


@pytest.mark.parametrize("args,needles", [
    (["objective=bryol"], ["'objective'", "did you mean 'byol'"]),
    (["objective=byol", "queue_size=256"], ["'queue_size' applies to objective=moco or swav"]),
    (["temperature=0.1"], ["'temperature'", "not objective=curl"]),
    (["objective=moco", "queue_size=64", "batch_size=128"], ["'queue_size' (64) must be >= batch_size (128)"]),
    (["objective=infonce", "temperature=0"], ["'temperature' must be > 0"]),
    (["objective=barlow_twins", "barlow_lambda=-1"], ["'barlow_lambda' must be >= 0"]),
    (["objective=supcon", "supcon_group=3", "batch_size=16"], ["'supcon_group' (3) must divide batch_size (16)"]),
    (["objective=byol", "curl=false"], ["needs curl=true"]),
    (["objective=swav", "update_mode=fused", "encoder_adam=shared"], ["does not apply to objective=swav"]),
])
def test_objective_mistakes_get_one_line_and_exit_2(args, needles, tmp_path):
    line = one_line_error(curlrl("train", "cartpole-swingup", "--run-dir", str(tmp_path / "r"), *args), *needles)
    assert line.startswith("curlrl: error:"), line
    assert not (tmp_path / "r").exists()



# -- the views (augment=) ---------------------------------------------------------------------
def test_augment_crop_is_the_default_update_and_other_chains_change_it():
    base, crop = make_agent(), make_agent(augment="crop")
    torch.manual_seed(5)
    m1 = base.update(make_batch(0))
    torch.manual_seed(5)
    m2 = crop.update(make_batch(0))
    assert {k: float(v) for k, v in m1.items()} == {k: float(v) for k, v in m2.items()}
    for spec in ("shift", "crop+jitter+grayscale", "crop+cutout+conv"):
        agent = make_agent(augment=spec, **({"crop_size": 24} if spec == "shift" else {}))
        torch.manual_seed(5)
        m = agent.update(make_batch(0))
        assert np.isfinite(float(m["curl_loss"])) and float(m["critic_loss"]) != float(m1["critic_loss"]), spec


@pytest.mark.parametrize("args,needles", [
    (["augment=crop+jiter"], ["'augment'", "did you mean 'jitter'"]),
    (["augment=jitter"], ["'augment'", "must start with crop or shift"]),
])
def test_augment_mistakes_get_one_line_and_exit_2(args, needles, tmp_path):
    line = one_line_error(curlrl("train", "cartpole-swingup", "--run-dir", str(tmp_path / "r"), *args), *needles)
    assert line.startswith("curlrl: error:"), line
    assert not (tmp_path / "r").exists()
