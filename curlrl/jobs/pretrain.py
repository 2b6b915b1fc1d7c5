"""Offline contrastive pretraining of the pixel encoder on a collected dataset.

The same core modules as the agent: :class:`PixelEncoder`, :func:`random_crop`,
:class:`CurlHead` (InfoNCE) and :func:`ema_update` for the momentum key encoder.

Positives:
    augment   the anchor's own frame stack under another random crop (CURL).
    temporal  the stack ``temporal_offset`` agent steps later in the same episode, both
              randomly cropped (ATC, Stooke et al. 2021).

Run directory::

    config.yaml               resolved PretrainConfig (resume reads it back)
    pretrain.csv              step, loss, accuracy, samples_per_s, wall_s
    events.out.tfevents.*     TensorBoard scalars (x-axis: updates)
    checkpoints/latest.pt     encoder, key encoder, CURL head, optimizer, step, RNG states (atomic)
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
import yaml

from curlrl.jobs import config as config_mod
from curlrl.augment import random_crop
from curlrl.checkpoint import atomic_save, atomic_write_text, safe_load
from curlrl.contrastive import CurlHead
from curlrl.ema import ema_update
from curlrl.encoder import PixelEncoder
from curlrl.errors import CheckpointError, ConfigError
from curlrl.jobs.progress import progress_bar
from curlrl.jobs.rundir import CsvLog, truncate_csv
from curlrl.options import EncoderConfig, option

PRETRAIN_COLUMNS = ["step", "loss", "accuracy", "samples_per_s", "wall_s"]
CHECKPOINT_KIND = "curlrl.jobs.pretrain/1"


@dataclass
class PretrainConfig(config_mod.RuntimeConfig, EncoderConfig):
    """Settings of ``curlrl pretrain``; ``steps`` count gradient updates (not env steps).

    The encoder and CURL fields are :class:`curlrl.options.EncoderConfig`'s (the agent's),
    the runtime fields (seed, device, threads) :class:`curlrl.jobs.config.RuntimeConfig`'s."""

    curl_lr: float = option(1e-3, "Adam learning rate of the bilinear W of the InfoNCE logits (pretraining's "
                                  "default, 1e-3; the agent's None means encoder_lr)", check="> 0")
    data_dir: str = option("", "dataset folder (made by curlrl collect)")
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
    if not cfg.data_dir:
        raise ConfigError("pretrain needs a DATA_DIR (a folder made by `curlrl collect`)")
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


class Pretrainer:
    """Owns one pretraining run: dataset, encoder + key encoder + W, logs and checkpoints."""

    def __init__(self, cfg: PretrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> None:
        from curlrl.datasets import load_dataset, split_episodes
        from curlrl.jobs.host import resolve_device

        self.cfg, self.run_dir, self.quiet = cfg, Path(run_dir), quiet
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.data = load_dataset(cfg.data_dir)
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
        self.curl_head = CurlHead(cfg.feature_dim).to(self.device)
        # One optimizer, two groups: every parameter is stepped exactly once per update.
        self.optimizer = torch.optim.Adam([
            dict(params=self.encoder.parameters(), lr=cfg.encoder_lr, betas=(0.9, 0.999)),
            dict(params=self.curl_head.parameters(), lr=cfg.curl_lr)])
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.step, self.wall_offset = 0, 0.0
        self.ckpt = self.run_dir / "checkpoints" / "latest.pt"
        if resume:
            self._load()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        if resume:
            truncate_csv(self.run_dir / "pretrain.csv", lambda r: int(r["step"]) <= self.step)
        self.log = CsvLog(self.run_dir / "pretrain.csv", PRETRAIN_COLUMNS)
        from torch.utils.tensorboard import SummaryWriter
        self.tb = SummaryWriter(str(self.run_dir), purge_step=self.step if resume else None)

    def _anchor_indices(self) -> np.ndarray:
        """Frames that can be anchors: training episodes (minus the last k frames if temporal)."""
        cfg, d = self.cfg, self.data
        offset = cfg.temporal_offset if cfg.positive == "temporal" else 0
        idx = np.concatenate([np.arange(d.start[e], d.end[e] - offset) for e in self.train_episodes])
        if len(idx) < cfg.batch_size:
            why = f" with temporal_offset={offset}" if offset else ""
            raise ConfigError(f"the dataset's {len(self.train_episodes)} training episodes give {len(idx)} anchor "
                              f"frames{why}, fewer than batch_size={cfg.batch_size}")
        return idx

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncropped uint8 (B, 3k, H, W) anchor and positive stacks on the device."""
        cfg = self.cfg
        t = self.rng.choice(self.anchors, size=cfg.batch_size, replace=False)
        anchor = torch.from_numpy(self.data.stacks(t, cfg.frame_stack)).to(self.device)
        if cfg.positive == "temporal":
            positive = torch.from_numpy(self.data.stacks(t + cfg.temporal_offset, cfg.frame_stack)).to(self.device)
        else:
            positive = anchor
        return anchor, positive

    def update(self) -> dict[str, torch.Tensor]:
        """One InfoNCE step (anchor: online encoder; key: momentum encoder, no grad).

        Returns loss and top-1 accuracy as 0-dim device tensors (read once per log window)."""
        cfg = self.cfg
        anchor, positive = self.sample()
        anchor = random_crop(anchor, cfg.crop_size, self.generator)
        positive = random_crop(positive, cfg.crop_size, self.generator)
        z_anchor = self.encoder(anchor)
        with torch.no_grad():
            z_key = self.key_encoder(positive)
        loss = self.curl_head.loss(z_anchor, z_key)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        if self.step % cfg.target_update_every == 0:
            ema_update(self.key_encoder, self.encoder, cfg.encoder_tau)
        return dict(loss=loss.detach(), accuracy=self.curl_head.accuracy_tensor(z_anchor.detach(), z_key))

    def run(self) -> dict:
        """Train to ``steps`` updates; returns a summary (printed unless quiet)."""
        cfg = self.cfg
        t_start, start_step = time.time(), self.step
        bar = progress_bar(cfg.steps, "update", self.quiet, initial=self.step)
        window, t_window, last = [], time.time(), {}
        try:
            while self.step < cfg.steps:
                window.append(self.update())
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = {k: float(torch.stack([m[k] for m in window]).mean()) for k in window[0]}
                    rate = len(window) * cfg.batch_size / max(time.time() - t_window, 1e-9)
                    wall = self.wall_offset + time.time() - t_start
                    self.log.write(dict(step=self.step, samples_per_s=rate, wall_s=wall, **last))
                    for k, v in last.items():
                        self.tb.add_scalar(f"pretrain/{k}", v, self.step)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.2f}", refresh=False)
                    window, t_window = [], time.time()
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self._save(self.wall_offset + time.time() - t_start)
        finally:
            bar.close()
            self.tb.flush()
        self.wall_offset += time.time() - t_start
        self._save(self.wall_offset)
        summary = dict(run_dir=str(self.run_dir), steps=self.step, loss=last.get("loss"),
                       accuracy=last.get("accuracy"), train_episodes=len(self.train_episodes),
                       holdout_episodes=len(self.holdout_episodes), wall_s=round(self.wall_offset, 1))
        if not self.quiet:
            acc = "n/a" if last.get("accuracy") is None else f"{last['accuracy']:.3f}"
            print(f"curlrl: pretrained {self.step - start_step} updates (to {self.step}) in "
                  f"{time.time() - t_start:.0f}s; last contrastive accuracy {acc}; "
                  f"checkpoint {self.ckpt}; export with `curlrl export {self.run_dir} --out encoder.safetensors`")
        return summary

    def _save(self, wall_s: float) -> None:
        atomic_save({
            "kind": CHECKPOINT_KIND,
            "config": json.dumps(dataclasses.asdict(self.cfg)),
            "encoder": self.encoder.state_dict(),
            "key_encoder": self.key_encoder.state_dict(),
            "curl_head": self.curl_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "wall_s": wall_s,
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "rng": json.dumps(self.rng.bit_generator.state),
        }, self.ckpt)

    def _load(self) -> None:
        if not self.ckpt.exists():
            raise CheckpointError(f"cannot resume: no checkpoint at {self.ckpt}")
        state = safe_load(self.ckpt, map_location=self.device)
        try:
            if state.get("kind") != CHECKPOINT_KIND:
                raise KeyError("kind")
            self.encoder.load_state_dict(state["encoder"])
            self.key_encoder.load_state_dict(state["key_encoder"])
            self.curl_head.load_state_dict(state["curl_head"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.wall_offset = int(state["step"]), float(state["wall_s"])
            torch.set_rng_state(state["torch_rng"])
            gen = state["generator"]
            self.generator.set_state(gen.cpu() if self.device.type == "cpu" else gen)
            self.rng.bit_generator.state = json.loads(state["rng"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{self.ckpt} is not a pretrain checkpoint matching this config ({exc})") from None

    def close(self) -> None:
        self.log.close()
        self.tb.close()


def pretrain(cfg: PretrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict:
    """Pretrain (or resume) in ``run_dir`` and return the summary."""
    trainer = Pretrainer(cfg, run_dir, resume=resume, quiet=quiet)
    try:
        return trainer.run()
    finally:
        trainer.close()
