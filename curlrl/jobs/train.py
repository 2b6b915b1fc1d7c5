"""The training loop: env steps on the x-axis, evals exactly at multiples of eval_every.

Run directory layout::

    config.yaml                resolved config (resume reads it back)
    train.csv / eval.csv       long format: task, seed, env_step, agent_step, updates, return, ...
    events.out.tfevents.*      TensorBoard scalars, x-axis = env steps
    videos/eval_<env_step>.mp4 first episode of each evaluation
    checkpoints/latest.pt      agent + optimizers + counters + RNG states (atomic)
    checkpoints/replay.npz     replay contents (save_replay=true; one format for host and device
                               storage, either reads it), written before latest.pt
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from curlrl.jobs import host
from curlrl.jobs.host import resolve_device
from curlrl.agents.curl_sac import AgentConfig, CurlSacAgent
from curlrl.checkpoint import atomic_save, atomic_write_text, safe_load
from curlrl.jobs.config import TrainConfig
from curlrl.errors import CheckpointError, ConfigError
from curlrl.jobs.progress import progress_bar
from curlrl.replay import BaseReplayBuffer, DeviceReplayBuffer, ReplayBuffer
from curlrl.jobs.rundir import EVAL_COLUMNS, TRAIN_COLUMNS, CsvLog, truncate_csv, write_video

CHECKPOINT_VERSION = 1


def agent_config(cfg: TrainConfig) -> AgentConfig:
    return AgentConfig(**{f.name: getattr(cfg, f.name) for f in fields(AgentConfig)})


def build_agent(cfg: TrainConfig, obs_shape: tuple[int, ...], action_dim: int, device: torch.device,
                from_checkpoint: bool = False) -> CurlSacAgent:
    """A :class:`CurlSacAgent` for ``cfg`` on ``device``.

    A fresh agent (``from_checkpoint=False``) starts its encoder from ``cfg.encoder_init``
    when that is set. An agent whose weights will come from a checkpoint does not read
    that file (it may have moved since the run started; the checkpoint holds the weights),
    but ``cfg.freeze_conv`` still applies: it decides which parameters the optimizers hold,
    and their saved state only loads into the same layout.
    """
    agent = CurlSacAgent(obs_shape, action_dim, agent_config(cfg), device=device, seed=cfg.seed)
    init = cfg.encoder_init if not from_checkpoint else ""
    if init or cfg.freeze_conv:
        from curlrl.encoder import PixelEncoder
        state = PixelEncoder.from_pretrained(init, **agent.encoder.config()).state_dict() if init else None
        agent.init_encoder(state, freeze_conv=cfg.freeze_conv)
    return agent


def build(cfg: TrainConfig, device: torch.device, from_checkpoint: bool = False):
    """The training env, the eval env and an agent for ``cfg`` (see :func:`build_agent`).

    ``from_checkpoint=True`` when the caller loads the agent's weights from a checkpoint
    next (resume, evaluation): ``cfg.encoder_init`` is then not read.
    """
    from curlrl.envs import make_env

    if cfg.capture == "cudagraphs" and device.type != "cuda":  # before the envs are built
        raise ConfigError(f"config key 'capture' = 'cudagraphs' needs a CUDA device; this run's device is {device}")
    env = make_env(cfg.task, cfg.image_size, cfg.action_repeat, cfg.frame_stack, seed=cfg.seed)
    eval_env = make_env(cfg.task, cfg.image_size, cfg.action_repeat, cfg.frame_stack, seed=cfg.seed + 10_000)
    torch.manual_seed(cfg.seed)
    agent = build_agent(cfg, env.observation_space.shape, env.action_space.shape[0], device,
                        from_checkpoint=from_checkpoint)
    return env, eval_env, agent


def build_replay(cfg: TrainConfig, device: torch.device, action_dim: int) -> BaseReplayBuffer:
    """The replay of ``cfg.replay_storage``: frames on ``device`` ("device", or "auto" on CUDA)
    or in host memory (LZ4-compressed if ``cfg.replay_compress``)."""
    frame_shape = (3, cfg.image_size, cfg.image_size)
    on_device = cfg.replay_storage == "device" or (cfg.replay_storage == "auto" and device.type == "cuda")
    if on_device:
        return DeviceReplayBuffer(cfg.replay_capacity, frame_shape, action_dim, cfg.frame_stack,
                                  seed=cfg.seed, device=device)
    return ReplayBuffer(cfg.replay_capacity, frame_shape, action_dim, cfg.frame_stack,
                        seed=cfg.seed, compress=cfg.replay_compress)


def episode_seed(seed: int, episode: int, salt: int = 0) -> int:
    """Reset seed of a training (salt 0) or evaluation episode: a resumed run replays it."""
    return (seed * 1_000_003 + salt * 7_919 + episode) % (2**31 - 1)


def evaluate(agent: CurlSacAgent, env, episodes: int, seed: int, eval_index: int,
             video_path: Path | None = None) -> list[float]:
    """Mean-action returns of ``episodes`` episodes; the first one is filmed if asked."""
    returns, frames = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=episode_seed(seed, eval_index * 1000 + ep, salt=1))
        done, total = False, 0.0
        while not done:
            if ep == 0 and video_path is not None:
                frames.append(obs[-3:].transpose(1, 2, 0))
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, sample=False))
            total += reward
            done = terminated or truncated
        returns.append(total)
    if video_path is not None and frames:
        video_path.parent.mkdir(parents=True, exist_ok=True)
        write_video(video_path, frames)
    return returns


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Owns one run: env, agent, replay, logs and checkpoints in ``run_dir``."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, self.run_dir, self.quiet = cfg, Path(run_dir), quiet
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.env, self.eval_env, self.agent = build(cfg, self.device, from_checkpoint=resume)
        self.replay = build_replay(cfg, self.device, self.env.action_space.shape[0])
        self.action_rng = np.random.default_rng(cfg.seed)
        self.env_step = self.episode = 0
        self.next_eval = self.next_checkpoint = 0
        self.eval_index = 0
        self.wall_offset = 0.0
        self.t_start = time.time()  # reset when run() starts; wall_s = wall_offset + time since then
        self.last_eval: float | None = None
        self.refill_until = 0  # after a resume without saved replay: random actions until this env step
        self.ckpt_dir = self.run_dir / "checkpoints"
        if resume:
            self._load_checkpoint()
        else:
            self.next_checkpoint = cfg.checkpoint_every
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._open_logs(resume)
        # Advice last, once nothing above can fail: a user's mistake (an unknown task, a missing
        # checkpoint) gets its one error line whatever the machine's load.
        if self.device.type == "cpu" and not quiet:
            if not cfg.threads:
                host.warn_if_cpu_busy()
            if cfg.amp == "bf16":
                print("curlrl: amp=bf16 is meant for GPUs; on a CPU without native bfloat16 the convs are "
                      "much slower (benchmarks/README.md)", file=sys.stderr)

    # -- files -----------------------------------------------------------------------
    def _write_config(self) -> None:
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(asdict(self.cfg), sort_keys=False))

    def _open_logs(self, resume: bool) -> None:
        if resume:  # drop rows written after the checkpoint; they will be written again
            truncate_csv(self.run_dir / "train.csv", lambda r: int(r["env_step"]) <= self.env_step)
            truncate_csv(self.run_dir / "eval.csv", lambda r: int(r["env_step"]) < self.next_eval)
        self.train_log = CsvLog(self.run_dir / "train.csv", TRAIN_COLUMNS)
        self.eval_log = CsvLog(self.run_dir / "eval.csv", EVAL_COLUMNS)
        from torch.utils.tensorboard import SummaryWriter
        self.tb = SummaryWriter(str(self.run_dir), purge_step=self.env_step if resume else None)

    def _save_checkpoint(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.save_replay:
            self.replay.save(self.ckpt_dir / "replay.npz")
        state = {
            "version": CHECKPOINT_VERSION,
            "config": json.dumps(asdict(self.cfg)),
            "agent": self.agent.state_dict(),
            "counters": dict(env_step=self.env_step, episode=self.episode, next_eval=self.next_eval,
                             next_checkpoint=self.next_checkpoint, eval_index=self.eval_index,
                             transitions=self.replay.transitions_written),
            "wall_s": self._wall(),
            "last_eval": -1.0 if self.last_eval is None else self.last_eval,
            "rng": _rng_state(),
            "action_rng": json.dumps(self.action_rng.bit_generator.state),
        }
        atomic_save(state, self.ckpt_dir / "latest.pt")

    def _load_checkpoint(self) -> None:
        path = self.ckpt_dir / "latest.pt"
        if not path.exists():
            raise CheckpointError(f"cannot resume: no checkpoint at {path} (a run that stopped before its "
                                  f"first checkpoint cannot continue; remove {self.run_dir} to start over)")
        state = safe_load(path, map_location=self.device)
        try:
            self.agent.load_state_dict(state["agent"])
            c = state["counters"]
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} does not match this config ({exc})") from None
        self.env_step, self.episode, self.eval_index = c["env_step"], c["episode"], c["eval_index"]
        self.next_eval, self.next_checkpoint = c["next_eval"], c["next_checkpoint"]
        self.wall_offset = float(state["wall_s"])
        self.last_eval = None if state["last_eval"] == -1.0 else float(state["last_eval"])
        _set_rng_state(state["rng"])
        self.action_rng.bit_generator.state = json.loads(state["action_rng"])
        replay_path = self.ckpt_dir / "replay.npz"
        if self.cfg.save_replay and replay_path.exists():  # written by either storage: both read it
            self.replay.load(replay_path)
            if self.replay.transitions_written != c["transitions"]:
                raise CheckpointError(f"{replay_path} does not belong to {path} (written at another step)")
        self.replay.end_episode()  # the resumed run starts a new episode
        if self.replay.transitions_written == 0:  # refill with random actions, as at the start
            self.refill_until = self.env_step + self.cfg.init_steps

    # -- loop ------------------------------------------------------------------------
    def _last_eval_text(self) -> str:
        return "n/a" if self.last_eval is None else f"{self.last_eval:.1f}"

    def _wall(self) -> float:
        return self.wall_offset + time.time() - self.t_start

    def _evaluate(self) -> None:
        cfg = self.cfg
        video = self.run_dir / "videos" / f"eval_{self.env_step:07d}.mp4" if cfg.video else None
        returns = evaluate(self.agent, self.eval_env, cfg.eval_episodes, cfg.seed, self.eval_index, video)
        row = dict(task=cfg.task, seed=cfg.seed, env_step=self.env_step,
                   agent_step=self.env_step // cfg.action_repeat, updates=self.agent.updates, wall_s=self._wall())
        for i, ret in enumerate(returns):
            self.eval_log.write(dict(row, eval_episode=i, **{"return": ret}))
        if returns:
            self.last_eval = float(np.mean(returns))
            self.tb.add_scalar("eval/return", self.last_eval, self.env_step)
            self.tb.add_scalar("eval/return_std", float(np.std(returns)), self.env_step)
        self.eval_index += 1
        self.next_eval += cfg.eval_every

    def run(self) -> dict:
        """Train to ``env_steps``; returns a summary dict (also printed unless quiet)."""
        cfg, agent, env, replay = self.cfg, self.agent, self.env, self.replay
        self.t_start = time.time()
        start_step = self.env_step
        bar = progress_bar(cfg.env_steps, "env step", self.quiet, initial=self.env_step)
        obs, _ = env.reset(seed=episode_seed(cfg.seed, self.episode))
        ep_return, ep_start, ep_metrics, t_ep = 0.0, self.env_step, [], time.time()
        try:
            while True:
                if self.env_step >= self.next_eval:
                    self._evaluate()
                    bar.set_postfix(eval_return=self._last_eval_text(), updates=agent.updates, refresh=False)
                if self.env_step >= cfg.env_steps:
                    break
                # random actions for init_steps (and until the replay holds a transition to learn from)
                random_phase = self.env_step < max(cfg.init_steps, self.refill_until) or len(replay) == 0
                if random_phase:
                    action = self.action_rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
                else:
                    # as the reference: act, update on the replay so far, then step the env
                    action = agent.act(obs, sample=True)
                    ep_metrics.append(agent.update(replay.sample(cfg.batch_size)))
                    if cfg.log_every_updates and agent.updates % cfg.log_every_updates == 0:
                        for k, v in ep_metrics[-1].items():
                            self.tb.add_scalar(f"update/{k}", v, self.env_step + cfg.action_repeat)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                replay.add(obs, action, reward, next_obs, terminated, truncated)
                obs, ep_return = next_obs, ep_return + reward
                self.env_step += cfg.action_repeat
                bar.update(cfg.action_repeat)
                if terminated or truncated:
                    self._end_episode(ep_return, self.env_step - ep_start, ep_metrics, time.time() - t_ep)
                    bar.set_postfix(ep_return=f"{ep_return:.1f}", eval_return=self._last_eval_text(),
                                    updates=agent.updates, refresh=False)
                    self.episode += 1
                    if self.env_step >= self.next_checkpoint:
                        while self.next_checkpoint <= self.env_step:
                            self.next_checkpoint += cfg.checkpoint_every
                        self._save_checkpoint()
                    obs, _ = env.reset(seed=episode_seed(cfg.seed, self.episode))
                    ep_return, ep_start, ep_metrics, t_ep = 0.0, self.env_step, [], time.time()
        finally:
            bar.close()
            self.tb.flush()
        self._save_checkpoint()
        return self._summary(start_step)

    def _end_episode(self, ep_return: float, length: int, metrics: list[dict], seconds: float) -> None:
        cfg = self.cfg
        # the agent's metrics are device tensors: one read per key and episode, not per update
        means = {k: float(torch.stack([m[k] for m in metrics if k in m]).mean()) for k in
                 ("critic_loss", "actor_loss", "curl_loss", "alpha", "entropy") if any(k in m for m in metrics)}
        row = dict(task=cfg.task, seed=cfg.seed, env_step=self.env_step, agent_step=self.env_step // cfg.action_repeat,
                   updates=self.agent.updates, episode=self.episode, episode_env_steps=length,
                   env_steps_per_s=length / max(seconds, 1e-9), wall_s=self._wall(), **means)
        row["return"] = ep_return
        self.train_log.write(row)
        self.tb.add_scalar("train/return", ep_return, self.env_step)
        self.tb.add_scalar("train/env_steps_per_s", row["env_steps_per_s"], self.env_step)
        self.tb.add_scalar("train/updates", self.agent.updates, self.env_step)
        for k, v in means.items():
            self.tb.add_scalar(f"train/{k}", v, self.env_step)

    def _summary(self, start_step: int) -> dict:
        summary = dict(run_dir=str(self.run_dir), task=self.cfg.task, seed=self.cfg.seed, env_steps=self.env_step,
                       agent_steps=self.env_step // self.cfg.action_repeat, updates=self.agent.updates,
                       episodes=self.episode, last_eval_return=self.last_eval, wall_s=round(self._wall(), 1))
        if not self.quiet:
            took = time.time() - self.t_start
            rate = (self.env_step - start_step) / max(took, 1e-9)
            ev = self._last_eval_text()
            print(f"\ncurlrl: {self.cfg.task} seed {self.cfg.seed}: {self.env_step} env steps "
                  f"({summary['agent_steps']} agent steps, {self.agent.updates} updates) "
                  f"in {took:.0f}s ({rate:.1f} env steps/s)\n"
                  f"  last eval return (mean of {self.cfg.eval_episodes}): {ev}\n"
                  f"  run dir: {self.run_dir}  (train.csv, eval.csv, videos/, checkpoints/, TensorBoard events)")
        return summary

    def close(self) -> None:
        self.train_log.close()
        self.eval_log.close()
        self.tb.close()


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> dict:
    """Train (or resume) a run in ``run_dir`` and return its summary."""
    trainer = Trainer(cfg, run_dir, resume=resume, quiet=quiet)
    try:
        return trainer.run()
    finally:
        trainer.close()
