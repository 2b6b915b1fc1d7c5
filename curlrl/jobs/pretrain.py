"""Offline contrastive pretraining of the pixel encoder on a collected dataset.

The same core modules as the agent: :class:`PixelEncoder`, the views (``augment=``,
:func:`curlrl.augment.make_views`; CURL's :func:`random_crop` by default), the objective
(``objective=``, :mod:`curlrl.objectives`; CURL's bilinear InfoNCE by default) and
:func:`ema_update` for the momentum key encoder.

Views: the anchor stack and the positive stack, each drawn by the view chain. View a goes through
the online encoder; view b through the momentum key encoder for curl, moco and byol (BYOL
also takes the online features of b and the key features of a), through the online encoder
for the siamese objectives. supcon draws its batch as groups of ``supcon_group`` frames of
one episode within ``supcon_window`` agent steps, labelled by episode and time.

Positives:
    augment   the anchor's own frame stack under another random crop (CURL).
    temporal  the stack ``temporal_offset`` agent steps later in the same episode, both
              randomly cropped (ATC, Stooke et al. 2021).

What the run directory holds (config.yaml, pretrain.csv, TensorBoard events, a checkpoint
of kind ``curlrl.pretrain/1``): :mod:`curlrl.jobs.rundir`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curlrl.augment import make_views
from curlrl.ema import ema_update
from curlrl.encoder import PixelEncoder
from curlrl.errors import CheckpointError, ConfigError
from curlrl.jobs import config as config_mod
from curlrl.jobs.divergence import diverged, first_nonfinite, first_nonfinite_in_modules
from curlrl.jobs.rundir import PRETRAIN_COLUMNS, PRETRAIN_KIND, RunDir
from curlrl.jobs.writer import RunWriter
from curlrl.jobs.signals import StopFlag
from curlrl.objectives import Curl, build_objective, check_batch
from curlrl.options import EncoderConfig, option

CHECKPOINT_KIND = PRETRAIN_KIND


@dataclass
class PretrainConfig(config_mod.RuntimeConfig, EncoderConfig):
    """Settings of ``curlrl pretrain``; ``steps`` count gradient updates (not env steps).

    The encoder and CURL fields are :class:`curlrl.options.EncoderConfig`'s (the agent's),
    the runtime fields (seed, device, threads) :class:`curlrl.jobs.config.RuntimeConfig`'s."""

    curl_lr: float = option(1e-3, "Adam learning rate of the objective's own parameters (CURL's bilinear W; the "
                                  "heads, predictor or prototypes of the others); pretraining's default, 1e-3 (the "
                                  "agent's None means encoder_lr)", check="> 0")
    data_dir: str = option("", "dataset folder: curlrl collect's episodes, videos (one per file), image folders "
                               "(one per episode) or V-D4RL files; several folders separated by commas are "
                               "pretrained on together (see data_mix)")
    data_mix: str = option("uniform", "with several folders, how anchors are drawn: uniform (each folder equally "
                                      "likely, whatever its size) or proportional (each frame equally likely)",
                           choices=("uniform", "proportional"))
    data_format: str = option("auto", "format of data_dir: auto (detected), curlrl, videos, frames or vd4rl",
                              choices=("auto", "curlrl", "videos", "frames", "vd4rl"))
    image_size: int = option(0, "frame size the dataset is brought to (centre-crop to a square, then bilinear "
                                "resize); 0 keeps the stored size", check=">= 0")
    steps: int = option(2000, "gradient updates", check="> 0", operational=True)
    batch_size: int = option(128, "anchors per update; the other B-1 keys are the negatives", check=">= 2")
    frame_stack: int = option(3, "frames per input stack (3 -> 9 channels), as the agent", check="> 0")
    positive: str = option("augment", "augment: the anchor's own stack under another random crop (CURL); "
                                      "temporal: the stack temporal_offset agent steps later (ATC)",
                           choices=("augment", "temporal"))
    temporal_offset: int = option(3, "positive = the stack this many agent steps later (positive=temporal)",
                                  check="> 0")
    holdout: float = option(0.2, "fraction of episodes left out (the probe's held-out split)", check="in [0, 1)")
    split_seed: int = option(0, "seed of the episode split (same default as the probe)")
    log_every: int = option(50, "CSV/TensorBoard row every N updates (mean over them)", check="> 0",
                            operational=True)
    checkpoint_every: int = option(500, "checkpoint every N updates (and at the end)", check="> 0",
                                   operational=True)


def validate(cfg: PretrainConfig) -> PretrainConfig:
    """Reject impossible values, naming the key."""
    cfg = config_mod.check_fields(cfg)
    config_mod.check_encoder(cfg)
    check_batch(cfg, cfg.batch_size)
    if cfg.objective == "supcon" and cfg.positive == "temporal":
        raise ConfigError("config key 'positive' = 'temporal' does not apply to objective=supcon: supcon draws its "
                          "own temporal positives (frames of one episode within supcon_window steps); use "
                          "positive=augment")
    if not cfg.data_dir:
        raise ConfigError("config key 'data_dir' is empty: pretraining needs a dataset folder (one that "
                          "`curlrl collect` writes)")
    data_folders(cfg.data_dir)  # a folder named twice is refused here, before anything is written
    return cfg


def resolve(data_dir: str | None, overrides: list[str] | None = None, base: dict | None = None) -> PretrainConfig:
    """Defaults (or a saved run's config) <- ``key=value`` overrides <- DATA_DIR, validated."""
    cfg = PretrainConfig()
    if base is not None:
        cfg = config_mod.apply(cfg, base, "saved run config")
    cfg = config_mod.apply(cfg, config_mod.parse_overrides(overrides or []), "command line")
    if data_dir:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    return validate(cfg)


def data_folders(data_dir: str) -> list[str]:
    """The dataset folders of ``data_dir`` (comma-separated for several)."""
    folders = [f.strip() for f in str(data_dir).split(",") if f.strip()]
    if len(set(folders)) != len(folders):
        raise ConfigError(f"config key 'data_dir' names a folder twice: {data_dir!r}")
    return folders


class Pretrainer(RunWriter):
    """Owns one pretraining run: dataset, encoder + key encoder + W, logs and checkpoints."""

    def __init__(self, cfg: PretrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> None:
        from curlrl.datasets import concat_datasets, load_dataset, split_episodes

        super().__init__(cfg, run_dir, quiet)
        folders = data_folders(cfg.data_dir)
        self.data = concat_datasets([load_dataset(f, cfg.data_format, cfg.image_size) for f in folders], folders)
        if cfg.crop_size > self.data.image_size:
            raise ConfigError(f"config key 'crop_size' ({cfg.crop_size}) must be <= the dataset's image size "
                              f"({self.data.image_size})")
        self.train_episodes, self.holdout_episodes = split_episodes(len(self.data.names), cfg.holdout, cfg.split_seed)
        self.anchors = self._anchor_indices()
        torch.manual_seed(cfg.seed)
        obs_shape = (3 * cfg.frame_stack, cfg.crop_size, cfg.crop_size)
        self.encoder = PixelEncoder(obs_shape, cfg.feature_dim, cfg.num_layers, cfg.num_filters,
                                    cfg.encoder_tanh).to(self.device)
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.objective = build_objective(cfg, cfg.feature_dim).to(self.device)
        # One optimizer, two groups: every parameter is stepped exactly once per update.
        groups = [dict(params=self.encoder.parameters(), lr=cfg.encoder_lr, betas=(0.9, 0.999))]
        own = [p for p in self.objective.parameters() if p.requires_grad]  # not momentum heads
        if own:
            groups.append(dict(params=own, lr=cfg.curl_lr))
        self.optimizer = torch.optim.Adam(groups)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.view = make_views(cfg.augment, cfg.crop_size)  # "crop": random_crop itself
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        # metrics of the updates since the last pretrain.csv row (carried by a checkpoint made between rows)
        self.window: list[dict[str, torch.Tensor]] = []
        self.stopped_by: str | None = None  # the signal's name after run() stopped early
        if resume:
            self._load()
        (self.log,) = self.open_files([(RunDir.PRETRAIN_CSV, PRETRAIN_COLUMNS, lambda r: int(r["step"]) <= self.step)],
                                      resume_step=self.step if resume else None)

    @property
    def curl_head(self) -> Curl | None:
        """CURL's bilinear head with ``objective=curl`` (the default), else None."""
        return self.objective if isinstance(self.objective, Curl) else None

    @property
    def objective_key(self) -> str:
        """The objective's entry in the checkpoint: ``curl_head`` (as before others existed) or ``objective``."""
        return "curl_head" if self.cfg.objective == "curl" else "objective"

    @property
    def ckpt(self) -> Path:
        """The current checkpoint's state file (its folder changes with each save)."""
        return self.rundir.checkpoint_path

    def _anchor_indices(self) -> np.ndarray:
        """Frames that can be anchors: training episodes (minus the last k frames if temporal)."""
        cfg, d = self.cfg, self.data
        offset = cfg.temporal_offset if cfg.positive == "temporal" else 0
        idx = np.concatenate([np.arange(d.start[e], d.end[e] - offset) for e in self.train_episodes])
        if len(idx) < cfg.batch_size:
            why = f" with temporal_offset={offset}" if offset else ""
            raise ConfigError(f"the dataset's {len(self.train_episodes)} training episodes give {len(idx)} anchor "
                              f"frames{why}, fewer than batch_size={cfg.batch_size}")
        self.anchor_p = None
        if d.source is not None and cfg.data_mix == "uniform":  # each folder equally likely
            source = d.source[d.episode[idx]]
            counts = np.bincount(source, minlength=int(d.source.max()) + 1)
            self.anchor_p = 1.0 / (counts[source] * np.count_nonzero(counts))
        return idx

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncropped uint8 (B, 3k, H, W) anchor and positive stacks on the device."""
        cfg = self.cfg
        if self.objective.needs_groups:
            t = self._window_indices()
        else:
            t = self.rng.choice(self.anchors, size=cfg.batch_size, replace=False, p=self.anchor_p)
        self.labels = t
        anchor = torch.from_numpy(self.data.stacks(t, cfg.frame_stack)).to(self.device)
        if cfg.positive == "temporal":
            positive = torch.from_numpy(self.data.stacks(t + cfg.temporal_offset, cfg.frame_stack)).to(self.device)
        else:
            positive = anchor
        return anchor, positive

    def _window_indices(self) -> np.ndarray:
        """supcon's batch: ``batch_size // supcon_group`` anchor frames, each with
        ``supcon_group - 1`` frames of its episode at most ``supcon_window`` steps away (the
        anchor again where the offset leaves the episode)."""
        cfg, d, obj = self.cfg, self.data, self.objective
        t0 = self.rng.choice(self.anchors, size=cfg.batch_size // obj.group, replace=False, p=self.anchor_p)
        t = t0[:, None] + self.rng.integers(-obj.window, obj.window + 1, size=(len(t0), obj.group - 1))
        ep = d.episode[t0]
        inside = (t >= d.start[ep][:, None]) & (t < d.end[ep][:, None])
        return np.concatenate([t0[:, None], np.where(inside, t, t0[:, None])], axis=1).reshape(-1)

    def update(self) -> dict[str, torch.Tensor]:
        """One step of the objective on two random crops (module docstring: which encoder
        sees which view).

        Returns loss and accuracy as 0-dim device tensors (read once per log window): CURL's
        bilinear top-1 accuracy for curl; for the other objectives the top-1 retrieval
        accuracy of the encoder features (does each view a's nearest view b, by cosine, come
        from the same sample?)."""
        cfg, obj = self.cfg, self.objective
        anchor, positive = self.sample()
        anchor = self.view(anchor, self.generator)
        positive = self.view(positive, self.generator)
        z_anchor, extra = self.encoder(anchor), {}
        if obj.keys == "momentum":
            with torch.no_grad():
                z_key = self.key_encoder(positive)
                if obj.symmetric:
                    extra["a_key"] = self.key_encoder(anchor)
            if obj.symmetric:
                extra["b_online"] = self.encoder(positive)
        else:
            z_key = self.encoder(positive)
        if obj.needs_groups:
            episode = torch.from_numpy(self.data.episode[self.labels]).to(self.device)
            time_ = torch.from_numpy(self.labels - self.data.start[self.data.episode[self.labels]]).to(self.device)
            extra.update(episode=episode, time=time_)
        loss, metrics = obj(z_anchor, z_key, **extra)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        if self.step % cfg.target_update_every == 0:
            ema_update(self.key_encoder, self.encoder, cfg.encoder_tau)
            obj.momentum_update(cfg.encoder_tau)
        if self.curl_head is not None:
            accuracy = self.curl_head.accuracy_tensor(z_anchor.detach(), z_key)
        else:
            accuracy = retrieval_accuracy(z_anchor.detach(), z_key.detach())
        return dict(loss=loss.detach(), accuracy=accuracy)

    def run(self, stop: StopFlag | None = None) -> dict:
        """Train to ``steps`` updates; returns a summary (printed unless quiet).

        ``stop`` (:mod:`curlrl.jobs.signals`): once set, the run finishes the update it is in,
        writes a checkpoint of it and returns early (the summary's ``stopped_by`` names the signal)."""
        cfg = self.cfg
        start_step = self.step
        with self.running(cfg.steps, "update", initial=self.step) as bar:
            window, t_window, last = self.window, time.time(), {}
            while self.step < cfg.steps:
                if stop:
                    self.stopped_by = stop.name
                    break
                window.append(self.update())
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = {k: float(torch.stack([m[k] for m in window]).mean()) for k in window[0]}
                    rate = len(window) * cfg.batch_size / max(time.time() - t_window, 1e-9)
                    self.log.write(dict(step=self.step, samples_per_s=rate, wall_s=self.wall(), **last))
                    self._check_window(window, last)
                    for k, v in last.items():
                        self.tb.add_scalar(f"pretrain/{k}", v, self.step)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.2f}", refresh=False)
                    window, t_window = [], time.time()
                    self.window = window
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self._save()
        wall = self.wall()
        self._save()
        summary = dict(run_dir=str(self.run_dir), steps=self.step, loss=last.get("loss"),
                       accuracy=last.get("accuracy"), train_episodes=len(self.train_episodes),
                       holdout_episodes=len(self.holdout_episodes), wall_s=round(wall, 1),
                       stopped_by=self.stopped_by)
        if not self.quiet and self.stopped_by is None:  # a stop has its own line (the command's)
            acc = "n/a" if last.get("accuracy") is None else f"{last['accuracy']:.3f}"
            print(f"curlrl: pretrained {self.step - start_step} updates (to {self.step}) in "
                  f"{time.time() - self.t_start:.0f}s; last contrastive accuracy {acc}; "
                  f"checkpoint {self.ckpt}")
        return summary

    def _check_window(self, window: list[dict[str, torch.Tensor]], means: dict[str, float]) -> None:
        """DivergenceError if a loss of the log window (updates up to ``self.step``) is not finite."""
        bad = first_nonfinite(window, means)
        if bad is not None:
            i, key, value = bad
            raise diverged(f"{key} is {value}", f"update {self.step - len(window) + i + 1}",
                           self.rundir.checkpoint_words())

    def _save(self) -> None:
        bad = first_nonfinite_in_modules({"encoder": self.encoder, "key_encoder": self.key_encoder,
                                          self.objective_key: self.objective})
        if bad is not None:
            raise diverged(f"parameter {bad} is not finite", f"update {self.step}", self.rundir.checkpoint_words())
        state = {
            "kind": PRETRAIN_KIND,
            "config": json.dumps(dataclasses.asdict(self.cfg)),
            "encoder": self.encoder.state_dict(),
            "key_encoder": self.key_encoder.state_dict(),
            self.objective_key: self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "wall_s": self.wall(),
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "rng": json.dumps(self.rng.bit_generator.state),
        }
        state.update(self._window_state())
        self.rundir.save_checkpoint(state)

    def _window_state(self) -> dict:
        """``{"log_window": {key: 1-d tensor}}``: the metrics of the updates since the last
        pretrain.csv row, so that a resumed run's next row averages the same updates."""
        if not self.window:
            return {}
        return {"log_window": {k: torch.stack([m[k] for m in self.window]) for k in self.window[0]}}

    def _load(self) -> None:
        self.check_resumable()
        state = self.rundir.load_checkpoint(map_location=self.device, kind=PRETRAIN_KIND)
        try:
            self.encoder.load_state_dict(state["encoder"])
            self.key_encoder.load_state_dict(state["key_encoder"])
            self.objective.load_state_dict(state[self.objective_key])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.wall_offset = int(state["step"]), float(state["wall_s"])
            torch.set_rng_state(state["torch_rng"])
            gen = state["generator"]
            self.generator.set_state(gen.cpu() if self.device.type == "cpu" else gen)
            self.rng.bit_generator.state = json.loads(state["rng"])
            window = state.get("log_window", {})
            self.window = [dict(zip(window, values)) for values in zip(*(v.unbind(0) for v in window.values()))]
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{self.ckpt} is not a pretrain checkpoint matching this config ({exc})") from None


@torch.no_grad()
def retrieval_accuracy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fraction of rows of ``a`` whose most cosine-similar row of ``b`` is their own (0-dim)."""
    sim = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    return (sim.argmax(dim=1) == torch.arange(len(a), device=a.device)).float().mean()


def pretrain(cfg: PretrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False,
             stop: StopFlag | None = None) -> dict:
    """Pretrain (or resume) in ``run_dir`` and return the summary (``stop``: see :meth:`Pretrainer.run`)."""
    with Pretrainer(cfg, run_dir, resume=resume, quiet=quiet) as trainer:
        return trainer.run(stop)
