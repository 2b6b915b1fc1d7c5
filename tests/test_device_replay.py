"""Device-resident replay: the same batches as the host storages, and the same files.

Every storage (host numpy, host LZ4, device) must give identical batches for the same
transition indices, and a file written by any of them must load into any of them. The
device storage runs here on the CPU (torch tensors on "cpu"); the CUDA checks are skipped
without a GPU.
"""
import numpy as np
import pytest
import torch

from curlrl import DeviceReplayBuffer, ReplayBuffer
from curlrl.errors import CheckpointError

K, H = 3, 4  # frame stack, tiny frames
STORAGES = ("raw", "lz4", "device")


def frame(ep: int, t: int) -> np.ndarray:
    """A (3, H, H) frame whose pixels encode (episode, time); channels differ too."""
    f = np.full((3, H, H), ep * 20 + t, dtype=np.uint8)
    f[1] += 100
    f[2, 0, 0] = 255
    return f


def stack(ep: int, t: int) -> np.ndarray:
    """The env's stack at time t: the last K frames, the first frame repeated at reset."""
    return np.concatenate([frame(ep, max(t - d, 0)) for d in range(K - 1, -1, -1)])


def make(storage: str, capacity: int, seed: int = 0):
    if storage == "device":
        return DeviceReplayBuffer(capacity, (3, H, H), 2, frame_stack=K, seed=seed, device="cpu")
    return ReplayBuffer(capacity, (3, H, H), 2, frame_stack=K, seed=seed, compress=storage == "lz4")


def fill(buf, episodes: list[tuple[int, str]], first_ep: int = 0) -> list[tuple[int, int, float]]:
    """Add episodes given as (length, "terminated" | "truncated" | "open"); returns
    (episode, t, not_done) of every transition in order."""
    out = []
    for i, (length, end) in enumerate(episodes):
        ep = first_ep + i
        for t in range(length):
            last = t == length - 1
            term, trunc = last and end == "terminated", last and end == "truncated"
            buf.add(stack(ep, t), np.array([ep, t], np.float32), 0.5 * t - ep, stack(ep, t + 1), term, trunc)
            out.append((ep, t, 0.0 if term else 1.0))
    return out


def as_numpy(batch: dict) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def check_against_truth(batch: dict[str, np.ndarray], truth: dict[tuple[int, int], float]) -> None:
    """Every sampled transition equals what the env produced (independent of any storage)."""
    for obs, action, reward, next_obs, not_done in zip(batch["obs"], batch["action"], batch["reward"],
                                                       batch["next_obs"], batch["not_done"]):
        ep, t = int(action[0]), int(action[1])
        np.testing.assert_array_equal(obs, stack(ep, t))
        np.testing.assert_array_equal(next_obs, stack(ep, t + 1))
        assert reward[0] == 0.5 * t - ep and not_done[0] == truth[(ep, t)]


EPISODES = {  # (capacity, episodes): no wrap, and a ring overwritten several times
    "episode_starts": (100, [(5, "truncated"), (1, "terminated"), (7, "truncated"), (2, "terminated"), (4, "open")]),
    "wrap_around": (20, [(9, "truncated"), (3, "terminated"), (9, "truncated"), (1, "truncated"),
                         (6, "terminated"), (9, "truncated"), (5, "open")]),
}


@pytest.mark.parametrize("case", list(EPISODES))
def test_every_storage_gives_the_same_batch_for_the_same_indices(case):
    capacity, episodes = EPISODES[case]
    bufs = {s: make(s, capacity) for s in STORAGES}
    for buf in bufs.values():
        written = fill(buf, episodes)
    assert len({(b.first_valid, b.transitions_written) for b in bufs.values()}) == 1
    raw = bufs["raw"]
    if case == "wrap_around":
        assert raw.transitions_written > capacity and raw.frames_written > raw.num_frames
    # all valid transitions, in order and shuffled with repeats
    t_all = np.arange(raw.first_valid, raw.transitions_written)
    t_mix = np.random.default_rng(0).choice(t_all, size=3 * len(t_all))
    truth = {(ep, t): nd for ep, t, nd in written}
    for t in (t_all, t_mix):
        batches = {s: b.batch_at(t) for s, b in bufs.items()}
        dev = batches["device"]
        assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in dev.values())
        for key, value in batches["raw"].items():
            assert dev[key].dtype == torch.from_numpy(value).dtype and tuple(dev[key].shape) == value.shape, key
            for s in ("lz4", "device"):
                np.testing.assert_array_equal(as_numpy(batches[s])[key], value, err_msg=f"{s} {key}")
        check_against_truth(batches["raw"], truth)
    # the transitions kept are exactly the newest ones, at least capacity - a few frames' worth
    kept = [(int(a[0]), int(a[1])) for a in raw.batch_at(t_all)["action"]]
    assert kept == [(ep, t) for ep, t, _ in written[-len(t_all):]] and len(t_all) >= min(capacity, len(written)) - 3
    assert {nd for *_, nd in written[-len(t_all):]} == {0.0, 1.0}  # terminations are among them


def test_device_sample_draws_valid_transitions_on_the_device_and_is_seeded():
    capacity, episodes = EPISODES["wrap_around"]
    buf, same, other = (make("device", capacity, seed) for seed in (3, 3, 4))
    for b in (buf, same, other):
        written = fill(b, episodes)
    batch = buf.sample(600)
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        "obs": ((600, 3 * K, H, H), torch.uint8), "next_obs": ((600, 3 * K, H, H), torch.uint8),
        "action": ((600, 2), torch.float32), "reward": ((600, 1), torch.float32),
        "not_done": ((600, 1), torch.float32)}
    batch = as_numpy(batch)
    check_against_truth(batch, {(ep, t): nd for ep, t, nd in written})
    drawn = {(int(a[0]), int(a[1])) for a in batch["action"]}
    assert drawn == {(ep, t) for ep, t, _ in written[-len(buf):]}  # uniform over all valid ones
    assert np.array_equal(as_numpy(same.sample(600))["action"], batch["action"])
    assert not np.array_equal(as_numpy(other.sample(600))["action"], batch["action"])
    # not the stream of torch.Generator().manual_seed(seed), which the agent's crops use
    naive = torch.randint(buf.first_valid, buf.transitions_written, (600,),
                          generator=torch.Generator().manual_seed(3))
    redraw = make("device", capacity, 3)
    fill(redraw, episodes)
    assert not torch.equal(redraw._draw(600), naive)


@pytest.mark.parametrize("storage", STORAGES)
def test_add_checks_continuity_and_batch_at_checks_indices(storage):
    buf = make(storage, 10)
    buf.add(stack(0, 0), np.zeros(2), 0.0, stack(0, 1), False, False)
    with pytest.raises(ValueError, match="continue"):
        buf.add(stack(1, 0), np.zeros(2), 0.0, stack(1, 1), False, False)
    buf.add(stack(0, 1), np.zeros(2), 0.0, stack(0, 2), False, False)  # the right obs is accepted
    with pytest.raises(ValueError, match="first_valid"):
        buf.batch_at(np.array([0, 2]))
    with pytest.raises(ValueError, match="empty"):
        make(storage, 10).sample(4)


def test_device_buffer_holds_about_one_frame_per_transition():
    cap, shape = 2000, (3, 100, 100)
    buf = DeviceReplayBuffer(cap, shape, action_dim=6, frame_stack=3, device="cpu")
    frame_bytes = int(np.prod(shape))  # 30,000
    assert buf.frames.nbytes == buf.num_frames * frame_bytes and buf.frames.dtype == torch.uint8
    assert frame_bytes < buf.nbytes / cap < 1.02 * frame_bytes + 100


@pytest.mark.parametrize("src_kind", STORAGES)
@pytest.mark.parametrize("dst_kind", STORAGES)
def test_a_file_written_by_any_storage_loads_into_any_storage(tmp_path, src_kind, dst_kind):
    src = make(src_kind, 30, seed=3)
    fill(src, [(9, "truncated"), (4, "terminated"), (9, "truncated"), (9, "truncated"), (3, "open")])
    src.save(tmp_path / "replay.npz")
    dst = make(dst_kind, 30, seed=99)
    dst.load(tmp_path / "replay.npz")
    assert (dst.first_valid, dst.transitions_written, dst.frames_written) == \
           (src.first_valid, src.transitions_written, src.frames_written)
    t = np.arange(src.first_valid, src.transitions_written)
    a, b = as_numpy(src.batch_at(t)), as_numpy(dst.batch_at(t))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if src_kind != "device" and dst_kind != "device" or src_kind == dst_kind:  # same generator kind
        a, b = as_numpy(src.sample(64)), as_numpy(dst.sample(64))
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the restored buffer continues the open episode (it knows its newest frame) ...
    for buf in (src, dst):
        buf.add(stack(4, 3), np.array([4, 3], np.float32), 0.0, stack(4, 4), False, False)
    with pytest.raises(ValueError, match="continue"):  # ... and only that episode
        dst.add(stack(3, 1), np.zeros(2), 0.0, stack(3, 2), False, False)
    for buf in (src, dst):
        buf.add(stack(4, 4), np.array([4, 4], np.float32), 0.0, stack(4, 5), True, False)
    t = np.arange(src.first_valid, src.transitions_written)
    a, b = as_numpy(src.batch_at(t)), as_numpy(dst.batch_at(t))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_device_load_rejects_corrupt_or_mismatched_files(tmp_path):
    src = make("lz4", 30)
    fill(src, [(5, "truncated")])
    src.save(tmp_path / "r.npz")
    with pytest.raises(CheckpointError, match="shape"):
        DeviceReplayBuffer(31, (3, H, H), 2, frame_stack=K, device="cpu").load(tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["frame_sizes"][-1] -= 1  # truncate the last frame's chunk
    arrays["frames_lz4"] = arrays["frames_lz4"][:-1]
    np.savez(tmp_path / "bad.npz", **arrays)
    dst = make("device", 30)
    with pytest.raises(CheckpointError, match="corrupt"):
        dst.load(tmp_path / "bad.npz")
    assert len(dst) == 0 and dst.frames.count_nonzero() == 0  # nothing was half-loaded


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_sample_and_add_never_wait_for_the_device():
    buf = DeviceReplayBuffer(50, (3, H, H), 2, frame_stack=K, seed=0, device="cuda")
    written = fill(buf, [(9, "truncated"), (4, "terminated")])
    batch = buf.sample(8)  # warm-up: lazy CUDA initialisation may synchronise once
    assert all(v.is_cuda for v in batch.values())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            batch = buf.sample(64)
        more = fill(buf, [(6, "open")], first_ep=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    check_against_truth(as_numpy(batch), {(ep, t): nd for ep, t, nd in written + more})
    t = np.arange(buf.first_valid, buf.transitions_written)
    host = make("raw", 50)
    fill(host, [(9, "truncated"), (4, "terminated")])
    fill(host, [(6, "open")], first_ep=2)
    a, b = host.batch_at(t), as_numpy(buf.batch_at(t))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
