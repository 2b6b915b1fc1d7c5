"""Replay: stacks rebuilt from stored frames equal the env's stacks, never crossing episodes."""
import numpy as np
import pytest

from curlrl import ReplayBuffer

K, H = 3, 4  # frame stack, tiny frames


def frame(ep: int, t: int) -> np.ndarray:
    """A (3, H, H) frame whose pixels encode (episode, time)."""
    return np.full((3, H, H), ep * 20 + t, dtype=np.uint8)


def stack(ep: int, t: int) -> np.ndarray:
    """The env's stack at time t: the last K frames, the first frame repeated at reset."""
    return np.concatenate([frame(ep, max(t - d, 0)) for d in range(K - 1, -1, -1)])


def fill(buf: ReplayBuffer, lengths, terminate_last=False) -> list:
    """Add episodes of the given lengths; returns the expected transitions in order."""
    expected = []
    for ep, T in enumerate(lengths):
        for t in range(T):
            last = t == T - 1
            term = last and terminate_last
            buf.add(stack(ep, t), np.array([ep, t], np.float32), float(t), stack(ep, t + 1),
                    terminated=term, truncated=last and not term)
            expected.append((ep, t, 0.0 if term else 1.0))
    return expected


def decode(obs: np.ndarray) -> list[tuple[int, int]]:
    return [(int(v) // 20, int(v) % 20) for v in obs[::3, 0, 0]]


def test_sampled_stacks_equal_the_env_stacks_at_episode_boundaries():
    buf = ReplayBuffer(100, (3, H, H), 2, frame_stack=K, seed=0)
    fill(buf, [5, 1, 7])
    batch = buf.sample(500)
    for obs, action, reward, next_obs in zip(batch["obs"], batch["action"], batch["reward"], batch["next_obs"]):
        ep, t = int(action[0]), int(action[1])
        assert reward[0] == t
        np.testing.assert_array_equal(obs, stack(ep, t))
        np.testing.assert_array_equal(next_obs, stack(ep, t + 1))
        assert {e for e, _ in decode(obs) + decode(next_obs)} == {ep}  # never crosses episodes
    assert len({(int(a[0]), int(a[1])) for a in batch["action"]}) == 13  # every transition reachable


def test_truncation_keeps_bootstrapping_and_termination_stops_it():
    buf = ReplayBuffer(50, (3, H, H), 2, frame_stack=K)
    fill(buf, [3], terminate_last=False)
    fill_term = ReplayBuffer(50, (3, H, H), 2, frame_stack=K)
    fill(fill_term, [3], terminate_last=True)
    for b, last_not_done in ((buf, 1.0), (fill_term, 0.0)):
        batch = b.sample(200)
        is_last = batch["action"][:, 1] == 2
        assert np.all(batch["not_done"][is_last] == last_not_done)
        assert np.all(batch["not_done"][~is_last] == 1.0)


def test_ring_overwrite_keeps_only_whole_valid_stacks():
    buf = ReplayBuffer(20, (3, H, H), 2, frame_stack=K, seed=1)
    expected = fill(buf, [9] * 6)  # 54 transitions into a 20-transition buffer
    assert len(buf) <= 20 and len(buf) >= 17
    batch = buf.sample(1000)
    kept = {(int(a[0]), int(a[1])) for a in batch["action"]}
    newest = {(ep, t) for ep, t, _ in expected[-len(buf):]}
    assert kept == newest  # only the most recent transitions, all of them reachable
    for obs, action, next_obs in zip(batch["obs"], batch["action"], batch["next_obs"]):
        ep, t = int(action[0]), int(action[1])
        np.testing.assert_array_equal(obs, stack(ep, t))
        np.testing.assert_array_equal(next_obs, stack(ep, t + 1))


def test_add_rejects_an_obs_that_does_not_continue_the_episode():
    buf = ReplayBuffer(10, (3, H, H), 2, frame_stack=K)
    buf.add(stack(0, 0), np.zeros(2), 0.0, stack(0, 1), False, False)
    with pytest.raises(ValueError, match="continue"):
        buf.add(stack(1, 0), np.zeros(2), 0.0, stack(1, 1), False, False)


def test_bytes_per_transition_is_about_one_frame():
    cap, shape = 10_000, (3, 100, 100)
    buf = ReplayBuffer(cap, shape, action_dim=6, frame_stack=3)
    frame_bytes = int(np.prod(shape))
    per_transition = buf.nbytes / cap
    reference = 2 * 3 * frame_bytes + 4 * 6 + 4 + 4  # obs + next_obs stacks, action, reward, not_done
    assert frame_bytes < per_transition < 1.02 * frame_bytes + 64
    assert reference / per_transition > 5.8


def test_save_load_roundtrip_gives_identical_samples(tmp_path):
    buf = ReplayBuffer(30, (3, H, H), 2, frame_stack=K, seed=3)
    fill(buf, [9] * 5)
    buf.save(tmp_path / "replay.npz")
    other = ReplayBuffer(30, (3, H, H), 2, frame_stack=K, seed=99)
    other.load(tmp_path / "replay.npz")
    assert len(other) == len(buf)
    a, b = buf.sample(64), other.sample(64)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # both continue identically after the restore
    buf.add(stack(9, 0), np.zeros(2), 0.0, stack(9, 1), False, False)
    other.add(stack(9, 0), np.zeros(2), 0.0, stack(9, 1), False, False)
    np.testing.assert_array_equal(buf.sample(8)["obs"], other.sample(8)["obs"])


def test_load_rejects_corrupt_or_mismatched_files(tmp_path):
    from curlrl.errors import CheckpointError
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="corrupt"):
        ReplayBuffer(30, (3, H, H), 2).load(bad)
    buf = ReplayBuffer(30, (3, H, H), 2, frame_stack=K)
    fill(buf, [4])
    buf.save(tmp_path / "r.npz")
    with pytest.raises(CheckpointError, match="shape"):
        ReplayBuffer(31, (3, H, H), 2, frame_stack=K).load(tmp_path / "r.npz")


# -- compressed frames (lz4): same samples as the raw buffer, fewer bytes -------------
def smooth_frame(ep: int, t: int, size: int = 100) -> np.ndarray:
    """A compressible (3, size, size) frame like a render: flat background, one moving block."""
    f = np.full((3, size, size), 40, dtype=np.uint8)
    f[:, size // 2:] = 90  # floor
    x = (7 * t + 13 * ep) % (size - 10)
    f[0, 30:40, x:x + 10] = 200 + ep
    f[1, 30:40, x:x + 10] = t % 256
    return f


def test_compressed_buffer_samples_equal_the_raw_buffer_and_the_env_stacks():
    raw = ReplayBuffer(40, (3, H, H), 2, frame_stack=K, seed=5)
    packed = ReplayBuffer(40, (3, H, H), 2, frame_stack=K, seed=5, compress=True)
    for buf in (raw, packed):
        fill(buf, [6, 1, 9, 30])  # overwrites the ring
    a, b = raw.sample(300), packed.sample(300)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    for obs, action, next_obs in zip(b["obs"], b["action"], b["next_obs"]):
        ep, t = int(action[0]), int(action[1])
        np.testing.assert_array_equal(obs, stack(ep, t))
        np.testing.assert_array_equal(next_obs, stack(ep, t + 1))
    packed.add(stack(7, 0), np.zeros(2), 0.0, stack(7, 1), False, False)
    with pytest.raises(ValueError, match="continue"):  # the continuity check still works
        packed.add(stack(8, 5), np.zeros(2), 0.0, stack(8, 6), False, False)


def test_compressed_frames_take_less_than_one_frame_per_transition():
    cap, shape = 2000, (3, 100, 100)
    raw = ReplayBuffer(cap, shape, action_dim=6, frame_stack=1)
    packed = ReplayBuffer(cap, shape, action_dim=6, frame_stack=1, compress=True)
    for buf in (raw, packed):
        for t in range(cap + 20):
            last = t % 100 == 99
            buf.add(smooth_frame(0, t), np.zeros(6, np.float32), 0.0, smooth_frame(0, t + 1), False, last)
    frame_bytes = int(np.prod(shape))
    assert raw.nbytes / len(raw) > frame_bytes
    assert packed.nbytes / len(packed) < frame_bytes / 6  # flat frames compress well
    np.testing.assert_array_equal(packed.sample(4)["obs"][0].shape, shape)


@pytest.mark.parametrize("save_compressed,load_compressed", [(True, True), (True, False), (False, True)])
def test_save_load_across_storage_kinds(tmp_path, save_compressed, load_compressed):
    src = ReplayBuffer(30, (3, H, H), 2, frame_stack=K, seed=3, compress=save_compressed)
    fill(src, [9] * 5)
    src.add(stack(9, 0), np.zeros(2), 0.0, stack(9, 1), False, False)  # an open episode
    src.save(tmp_path / "replay.npz")
    dst = ReplayBuffer(30, (3, H, H), 2, frame_stack=K, seed=99, compress=load_compressed)
    dst.load(tmp_path / "replay.npz")
    a, b = src.sample(64), dst.sample(64)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # the restored buffer continues the open episode (it knows its newest frame) ...
    for buf in (src, dst):
        buf.add(stack(9, 1), np.zeros(2), 0.0, stack(9, 2), False, False)
    with pytest.raises(ValueError, match="continue"):  # ... and only that episode
        dst.add(stack(3, 1), np.zeros(2), 0.0, stack(3, 2), False, False)
    np.testing.assert_array_equal(src.sample(8)["obs"], dst.sample(8)["obs"])


def test_compressed_load_rejects_a_corrupt_frame(tmp_path):
    from curlrl.errors import CheckpointError
    src = ReplayBuffer(30, (3, 20, 20), 2, frame_stack=K, compress=True)
    for t in range(5):
        src.add(np.concatenate([smooth_frame(0, t, 20)] * K), np.zeros(2), 0.0,
                np.concatenate([smooth_frame(0, t + 1, 20)] * K), False, t == 4)
    src.save(tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["frame_sizes"][-1] -= 3  # truncate the last frame's chunk
    arrays["frames_lz4"] = arrays["frames_lz4"][:-3]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match="corrupt"):
        ReplayBuffer(30, (3, 20, 20), 2, frame_stack=K, compress=True).load(tmp_path / "bad.npz")
    with pytest.raises(CheckpointError, match="corrupt"):
        ReplayBuffer(30, (3, 20, 20), 2, frame_stack=K).load(tmp_path / "bad.npz")
