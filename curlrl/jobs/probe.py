"""Evaluate a frozen encoder on a dataset: linear probe, kNN regression, contrastive accuracy.

Features are the encoder's output (``feature_dim``, after LayerNorm) of centre-cropped
frame stacks built within episodes. The dataset is split **by episode** (the same split
as ``curlrl pretrain``'s ``holdout``), so no held-out frame's neighbours leak into training.

- Linear probe: ridge regression in closed form from standardised features (+ bias) to
  the standardised true state; R² on the held-out split, per state dimension and their mean.
  The penalty is chosen on a validation quarter of the training episodes unless given.
- kNN: each held-out feature's ``k`` nearest training features (Euclidean, standardised)
  predict the mean of their states; reported as normalised MSE (MSE / variance, mean over
  dimensions) and its R² = 1 - NMSE.
- Contrastive top-1 accuracy: two random crops of held-out stacks, anchors through the
  encoder, keys through the key encoder (or the encoder itself), scored by the CURL head;
  n/a without a head.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from curlrl.augment import center_crop, random_crop
from curlrl.checkpoint import atomic_write_text
from curlrl.errors import ConfigError, DatasetError


@torch.no_grad()
def features(encoder, data, index: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, feature_dim) float64 features of the centre-cropped stacks ending at ``index``."""
    c, size, _ = encoder.obs_shape
    out = []
    for i in range(0, len(index), batch):
        x = torch.from_numpy(data.stacks(index[i:i + batch], c // 3))
        out.append(encoder(center_crop(x, size)).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.feature_dim))


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             alpha: float = 1.0) -> np.ndarray:
    """Per-dimension held-out R² of closed-form ridge regression (nan where y_test is constant)."""
    xs, xt = _standardise(x_train, x_test)
    ys, yt = _standardise(y_train, y_test)
    xs, xt = (np.hstack([a, np.ones((len(a), 1))]) for a in (xs, xt))
    reg = alpha * np.eye(xs.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the bias
    w = np.linalg.solve(xs.T @ xs + reg, xs.T @ ys)
    return r2(yt, xt @ w)


RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def choose_ridge_alpha(x: np.ndarray, y: np.ndarray, episode: np.ndarray, seed: int = 0) -> float:
    """The ridge penalty of :data:`RIDGE_GRID` with the best mean R² on a validation quarter
    of the training episodes (split by episode); 1.0 when there are too few episodes."""
    from curlrl.datasets import split_episodes

    eps = np.unique(episode)
    if len(eps) < 2:
        return 1.0
    fit_ep, val_ep = split_episodes(len(eps), 0.25, seed)
    fit, val = np.isin(episode, eps[fit_ep]), np.isin(episode, eps[val_ep])
    scores = [np.nanmean(ridge_r2(x[fit], y[fit], x[val], y[val], a)) for a in RIDGE_GRID]
    return float(RIDGE_GRID[int(np.nanargmax(scores))]) if not np.all(np.isnan(scores)) else 1.0


def r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column coefficient of determination; nan for a constant column."""
    sst = ((y - y.mean(0)) ** 2).sum(0)
    sse = ((y - pred) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 1e-12, 1.0 - sse / sst, np.nan)


def knn_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
           k: int = 5) -> np.ndarray:
    """Per-dimension held-out R² of k-nearest-neighbour regression (mean state of k neighbours)."""
    xs, xt = (torch.from_numpy(a) for a in _standardise(x_train, x_test))
    k = min(k, len(xs))
    nearest = []
    for i in range(0, len(xt), 1024):
        nearest.append(torch.cdist(xt[i:i + 1024], xs).topk(k, largest=False).indices.numpy())
    pred = y_train[np.concatenate(nearest)].mean(1)
    return r2(y_test, pred)


@torch.no_grad()
def contrastive_accuracy(encoder, key_encoder, head, data, index: np.ndarray, batch: int = 128,
                         batches: int = 8, seed: int = 0) -> float:
    """Mean top-1 accuracy of ``head`` over random batches of held-out stacks (two random crops)."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    c, size, _ = encoder.obs_shape
    batch = min(batch, len(index))
    accs = []
    for _ in range(batches):
        x = torch.from_numpy(data.stacks(rng.choice(index, size=batch, replace=False), c // 3))
        z_a = encoder(random_crop(x, size, gen))
        z_k = (key_encoder or encoder)(random_crop(x, size, gen))
        accs.append(head.accuracy(z_a, z_k))
    return float(np.mean(accs))


def _transition_probe(f_tr, f_te, tr, te, data, key: str, ridge_alpha, split_seed) -> float | None:
    """Held-out R² of ridge regression from the features of frames t and t+1 to ``data.<key>``
    (the action taken after frame t, or the reward for it), mean over its dimensions."""
    target = getattr(data, key)
    if target is None:
        return None
    target = target.reshape(len(target), -1).astype(np.float64)

    def pairs(feats, idx):
        t = idx[~np.isnan(target[idx]).any(1)]  # frames followed by a transition (not an episode's last)
        pos = np.searchsorted(idx, t)
        return np.hstack([feats[pos], feats[pos + 1]]), target[t], data.episode[t]

    x_tr, y_tr, ep_tr = pairs(f_tr, tr)
    x_te, y_te, _ = pairs(f_te, te)
    if len(x_tr) < 2 or len(x_te) < 2:
        return None
    alpha = ridge_alpha if ridge_alpha is not None else choose_ridge_alpha(x_tr, y_tr, ep_tr, split_seed)
    return round(float(np.nanmean(ridge_r2(x_tr, y_tr, x_te, y_te, alpha))), 4)


def probe(loaded, data, holdout: float = 0.2, split_seed: int = 0, ridge_alpha: float | None = None,
          knn_k: int = 5) -> dict:
    """All probe metrics of one encoder (a :class:`curlrl.jobs.export.LoadedEncoder`) on ``data``:
    the state probes (linear, kNN) where the dataset has the true state; the inverse-dynamics
    probe (features of frames t and t+1 -> the action between them) and the reward probe
    (-> the reward for it) where it has actions and rewards; the contrastive accuracy where
    the encoder comes with its CURL head. Each fits on training episodes and scores R² on the
    held-out ones."""
    from curlrl.datasets import split_episodes

    enc = loaded.encoder.eval()
    c, size, _ = enc.obs_shape
    if c % 3:
        raise ConfigError(f"encoder input has {c} channels, not a stack of RGB frames")
    if size > data.image_size:
        raise DatasetError(f"the encoder's input crop ({size}) is larger than the dataset's frames "
                           f"({data.image_size}x{data.image_size})")
    if len(data.names) < 2:
        raise DatasetError("the probe needs at least 2 episodes (it splits by episode)")
    if data.state is None and data.action is None:
        raise DatasetError(f"the probes need the true state or actions, and this dataset "
                           f"({data.manifest.get('format', 'curlrl')} format) has neither")
    train_ep, test_ep = split_episodes(len(data.names), holdout, split_seed)
    tr, te = data.frame_indices(train_ep), data.frame_indices(test_ep)
    f_tr, f_te = features(enc, data, tr), features(enc, data, te)
    state = dict(state_names=[], linear_r2=None, linear_r2_per_dim=[], knn_nmse=None, knn_r2=None,
                 knn_r2_per_dim=[])
    alpha = ridge_alpha
    if data.state is not None:
        y_tr, y_te = data.state[tr].astype(np.float64), data.state[te].astype(np.float64)
        if alpha is None:  # chosen on training episodes only: the held-out split stays unseen
            alpha = choose_ridge_alpha(f_tr, y_tr, data.episode[tr], split_seed)
        lin, knn = ridge_r2(f_tr, y_tr, f_te, y_te, alpha), knn_r2(f_tr, y_tr, f_te, y_te, knn_k)
        names = list(data.manifest.get("state_names") or [])
        if len(names) != y_tr.shape[1]:
            names = [f"state[{i}]" for i in range(y_tr.shape[1])]
        state = dict(state_names=names, linear_r2=round(float(np.nanmean(lin)), 4), linear_r2_per_dim=_clean(lin),
                     knn_nmse=round(float(1.0 - np.nanmean(knn)), 4), knn_r2=round(float(np.nanmean(knn)), 4),
                     knn_r2_per_dim=_clean(knn))
    acc = None
    if loaded.curl_head is not None:
        acc = contrastive_accuracy(enc, loaded.key_encoder, loaded.curl_head.eval(), data, te, seed=split_seed)
    return dict(
        encoder=loaded.source, frame_stack=c // 3, crop_size=size, feature_dim=enc.feature_dim,
        train_episodes=len(train_ep), heldout_episodes=[data.names[i] for i in test_ep],
        train_frames=len(tr), heldout_frames=len(te), **state, knn_k=knn_k,
        inverse_dynamics_r2=_transition_probe(f_tr, f_te, tr, te, data, "action", ridge_alpha, split_seed),
        reward_r2=_transition_probe(f_tr, f_te, tr, te, data, "reward", ridge_alpha, split_seed),
        contrastive_accuracy=None if acc is None else round(acc, 4),
        contrastive_key="momentum key encoder" if loaded.key_encoder is not None else "same encoder",
        ridge_alpha=alpha)


def _clean(a: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 4) for v in a]


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(results: list[dict], data_dir: str) -> str:
    """A Markdown report: one summary row per encoder, then per-dimension R² of the state."""
    first = results[0]
    lines = [f"# Probe of frozen encoders on `{data_dir}`", "",
             f"Held-out split by episode: {len(first['heldout_episodes'])} episodes "
             f"({first['heldout_frames']} frames); probes fit on {first['train_episodes']} episodes "
             f"({first['train_frames']} frames). Features: encoder output ({first['feature_dim']}-d) of "
             f"centre-cropped {first['crop_size']}px stacks of {first['frame_stack']} frames. "
             "Inverse dynamics: frames t and t+1 -> the action between them; reward: -> its reward "
             "(n/a: the dataset has no such labels).", "",
             "| encoder | linear R² | kNN R² (k={}) | kNN NMSE | inverse-dynamics R² | reward R² | "
             "contrastive top-1 |".format(first["knn_k"]),
             "|---|---|---|---|---|---|---|"]
    for r in results:
        cells = [r[k] for k in ("linear_r2", "knn_r2", "knn_nmse", "inverse_dynamics_r2", "reward_r2",
                                "contrastive_accuracy")]
        lines.append(f"| {r['encoder']} | " + " | ".join(_cell(v) for v in cells) + " |")
    if first["state_names"]:
        lines += ["", "Linear-probe R² per state dimension (held out):", "",
                  "| encoder | " + " | ".join(first["state_names"]) + " |",
                  "|---|" + "---|" * len(first["state_names"])]
        for r in results:
            lines.append(f"| {r['encoder']} | " + " | ".join(_cell(v) for v in r["linear_r2_per_dim"]) + " |")
    return "\n".join(lines) + "\n"


def default_out(spec: str) -> Path:
    """Where probe results go when no ``out`` is given: RUN_DIR/probe, <file>.probe/, or ./probe-random."""
    if spec == "random":
        return Path("probe-random")
    path = Path(spec)
    return path / "probe" if path.is_dir() else path.with_name(path.stem + ".probe")


def run_probe(spec: str, data_dir: str | Path, out: str | Path | None = None, holdout: float = 0.2,
              split_seed: int = 0, with_random: bool = False, frame_stack: int = 3, crop_size: int = 84,
              seed: int = 0, ridge_alpha: float | None = None, knn_k: int = 5, threads: int = 0,
              quiet: bool = False, data_format: str = "auto", image_size: int = 0) -> list[dict]:
    """Probe ``spec`` (a run dir, a .safetensors file or "random") on ``data_dir``.

    ``with_random`` adds a randomly initialised encoder of the same shape (seed ``seed``)
    as a baseline row. Writes ``probe.json`` and ``probe.md`` in ``out``; returns the rows.
    ``data_format`` / ``image_size``: as :func:`curlrl.datasets.load_dataset`'s.
    """
    from curlrl.datasets import load_dataset
    from curlrl.jobs.export import load_encoder, random_loaded

    if threads:
        torch.set_num_threads(threads)
    if knn_k < 1 or (ridge_alpha is not None and ridge_alpha < 0):
        raise ConfigError(f"knn_k must be >= 1 and ridge_alpha >= 0, got {knn_k} and {ridge_alpha}")
    data = load_dataset(data_dir, data_format, image_size)
    if spec == "random":
        loaded = random_loaded((3 * frame_stack, crop_size, crop_size), seed)
    else:
        loaded = load_encoder(spec)
    encoders = [loaded]
    if with_random and spec != "random":
        cfg = loaded.encoder.config()
        encoders.append(random_loaded(tuple(cfg.pop("obs_shape")), seed, **cfg))
    results = [probe(e, data, holdout, split_seed, ridge_alpha, knn_k) for e in encoders]
    out = Path(out) if out else default_out(spec)
    out.mkdir(parents=True, exist_ok=True)
    report = {"data_dir": str(data_dir), "results": results}
    atomic_write_text(out / "probe.md", markdown(results, str(data_dir)))
    atomic_write_text(out / "probe.json", json.dumps(report, indent=2) + "\n")  # last: its presence means complete
    if not quiet:
        for r in results:
            acc = "n/a" if r["contrastive_accuracy"] is None else f"{r['contrastive_accuracy']:.3f}"
            print(f"{r['encoder']}: linear R² {_cell(r['linear_r2'])}, kNN R² {_cell(r['knn_r2'])}, "
                  f"inverse-dynamics R² {_cell(r['inverse_dynamics_r2'])}, reward R² {_cell(r['reward_r2'])}, "
                  f"contrastive top-1 {acc}")
        print(f"curlrl: wrote {out / 'probe.json'} and {out / 'probe.md'}")
    return results
