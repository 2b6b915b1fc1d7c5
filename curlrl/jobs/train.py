"""The training loop: env steps on the x-axis, evals exactly at multiples of eval_every.

What the run directory holds (config, logs, videos, checkpoint and replay): :mod:`curlrl.jobs.rundir`.
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

from curlrl.agents.curl_sac import AgentConfig, CurlSacAgent
from curlrl.errors import CheckpointError, ConfigError, CurlrlError
from curlrl.jobs.config import TrainConfig
from curlrl.jobs.divergence import diverged, first_nonfinite, first_nonfinite_in_modules
from curlrl.jobs.episodes import episode_seed, evaluate
from curlrl.jobs.faults import configured_fault, fault_point
from curlrl.jobs.plot import CURVE_PNG, Curve, curve_text, plot_curves, random_text, read_curve
from curlrl.jobs.rngstate import global_rng_state, set_global_rng_state
from curlrl.jobs.rundir import CHECKPOINT_VERSION, EVAL_COLUMNS, TRAIN_COLUMNS, TRAIN_KIND, RunDir
from curlrl.jobs.writer import RunWriter
from curlrl.jobs.signals import StopFlag
from curlrl.replay import BaseReplayBuffer, DeviceReplayBuffer, ReplayBuffer

EVAL_SEED_OFFSET = 10_000  # the evaluation env's seed is the run's seed plus this


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

    With ``cfg.encoder_module`` the agent's trunk is what that factory returns
    (:func:`curlrl.jobs.export.make_foreign`), called again when the weights will come from a
    checkpoint: the factory must build the same architecture, and the checkpoint's weights
    (the trunk's included) replace the ones it made.
    """
    trunk = None
    if cfg.encoder_module:
        from curlrl.jobs.export import make_foreign

        trunk = make_foreign(cfg.encoder_module)
        want = (obs_shape[0], cfg.crop_size, cfg.crop_size)
        if tuple(trunk.obs_shape) != want:
            raise ConfigError(f"encoder module {cfg.encoder_module!r} takes obs_shape {tuple(trunk.obs_shape)}, "
                              f"but this run feeds it {want} (3 x frame_stack, crop_size, crop_size)")
    agent = CurlSacAgent(obs_shape, action_dim, agent_config(cfg), device=device, seed=cfg.seed, trunk=trunk)
    init = cfg.encoder_init if not from_checkpoint else ""
    if init or cfg.freeze_conv:
        from curlrl.encoder import PixelEncoder
        state = PixelEncoder.from_pretrained(init, **agent.encoder.config()).state_dict() if init else None
        agent.init_encoder(state, freeze_conv=cfg.freeze_conv)
    return agent


def load_agent(run: RunDir, cfg: TrainConfig, obs_shape: tuple[int, ...], action_dim: int, device: torch.device):
    """The agent saved in ``run``'s checkpoint, built for ``cfg`` on ``device``, and the
    checkpoint's contents. ``encoder_init`` is not read: the checkpoint holds the weights,
    and that file may have moved since the run started."""
    state = run.load_checkpoint(map_location=device, kind=TRAIN_KIND)
    agent = build_agent(cfg, obs_shape, action_dim, device, from_checkpoint=True)
    run.load_agent_state(agent, state)
    return agent, state


def check_device(cfg: TrainConfig, device: torch.device) -> None:
    """ConfigError for settings the device cannot run; called before the envs are built."""
    if cfg.capture == "cudagraphs" and device.type != "cuda":
        raise ConfigError(f"config key 'capture' = 'cudagraphs' needs a CUDA device; this run's device is {device}")


def build_env(cfg: TrainConfig, evaluation: bool = False):
    """The training env of ``cfg``, or (``evaluation=True``) its evaluation env."""
    from curlrl.envs import make_env

    seed = cfg.seed + (EVAL_SEED_OFFSET if evaluation else 0)
    return make_env(cfg.task, cfg.image_size, cfg.action_repeat, cfg.frame_stack, seed=seed)


def build(cfg: TrainConfig, device: torch.device, from_checkpoint: bool = False):
    """The training env, the eval env and an agent for ``cfg`` (see :func:`build_agent`).

    ``from_checkpoint=True`` when the caller loads the agent's weights from a checkpoint
    next (resume, evaluation): ``cfg.encoder_init`` is then not read.
    """
    check_device(cfg, device)
    env, eval_env = build_env(cfg), build_env(cfg, evaluation=True)
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


class Trainer(RunWriter):
    """Owns one run: env, agent, replay, logs and checkpoints in ``run_dir``."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> None:
        self.fault = configured_fault()  # tests' kill points (curlrl.jobs.faults); None unless set
        super().__init__(cfg, run_dir, quiet)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.env, self.eval_env, self.agent = build(cfg, self.device, from_checkpoint=resume)
        self.replay = build_replay(cfg, self.device, self.env.action_space.shape[0])
        self.action_rng = np.random.default_rng(cfg.seed)
        self.env_step = self.episode = 0
        self.next_eval = self.next_checkpoint = 0
        self.eval_index = 0
        self.last_eval: float | None = None
        self.refill_until = 0  # after a resume without saved replay: random actions until this env step
        # the episode in progress while run() writes its last checkpoint: return, start, metrics, seconds
        self._open_episode: dict | None = None
        self._resumed_episode: dict | None = None  # from a checkpoint written mid-episode
        self.stopped_by: str | None = None  # the signal's name after run() stopped early
        if resume:
            self._load_checkpoint()
        else:
            self.next_checkpoint = cfg.checkpoint_every
        # rows after the checkpoint are dropped on resume: they will be written again
        self.train_log, self.eval_log = self.open_files(
            [(RunDir.TRAIN_CSV, TRAIN_COLUMNS, lambda r: int(r["env_step"]) <= self.env_step),
             (RunDir.EVAL_CSV, EVAL_COLUMNS, lambda r: int(r["env_step"]) < self.next_eval)],
            resume_step=self.env_step if resume else None)
        # Advice last, once nothing above can fail: a user's mistake (an unknown task, a missing
        # checkpoint) gets its one error line whatever the machine's load.
        if self.device.type == "cpu" and not quiet and cfg.amp == "bf16":
            print("curlrl: amp=bf16 is meant for GPUs; on a CPU without native bfloat16 the convs are "
                  "much slower (benchmarks/README.md)", file=sys.stderr)

    # -- checkpoints -----------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        self._check_finite()
        state = {
            "kind": TRAIN_KIND,
            "version": CHECKPOINT_VERSION,
            "config": json.dumps(asdict(self.cfg)),
            "agent": self.agent.state_dict(),
            "counters": dict(env_step=self.env_step, episode=self.episode, next_eval=self.next_eval,
                             next_checkpoint=self.next_checkpoint, eval_index=self.eval_index,
                             transitions=self.replay.transitions_written),
            "wall_s": self.wall(),
            "last_eval": -1.0 if self.last_eval is None else self.last_eval,
            "rng": global_rng_state(),
            "action_rng": json.dumps(self.action_rng.bit_generator.state),
        }
        state.update(self._episode_state())
        # one atomic unit: the agent and its replay, or (until it commits) the previous checkpoint
        self.rundir.save_checkpoint(state, replay=self.replay if self.cfg.save_replay else None)
        fault_point("checkpoint", self.env_step, self.fault)

    def _check_finite(self) -> None:
        """DivergenceError (before anything is written) if a parameter of the agent is not finite."""
        agent = self.agent
        bad = first_nonfinite_in_modules(agent.modules(), [("log_alpha", agent.log_alpha)])
        if bad is not None:
            raise diverged(f"agent parameter {bad} is not finite", f"update {agent.updates} (env step "
                           f"{self.env_step})", self.rundir.checkpoint_words())

    def _episode_state(self) -> dict:
        """``{"episode": ...}`` when a checkpoint is written mid-episode (a stop, the end of the
        run): the env's state (:meth:`DMCPixelEnv.get_episode_state`, arrays as tensors), the
        return so far, the episode's first env step, seconds so far, and the metrics of its
        updates so far (one 1-d tensor per key); ``{}`` between episodes."""
        ep = self._open_episode
        if ep is None:
            return {}
        metrics: dict[str, list] = {}
        for m in ep["metrics"]:
            for k, v in m.items():
                metrics.setdefault(k, []).append(v)
        return {"episode": {
            "env": _to_tensors(self.env.get_episode_state()),
            "return": float(ep["return"]), "start": int(ep["start"]), "seconds": float(ep["seconds"]),
            "metrics": {k: torch.stack(v) for k, v in metrics.items()},
        }}

    def _load_checkpoint(self) -> None:
        self.check_resumable()
        path = self.rundir.checkpoint_path
        state = self.rundir.load_checkpoint(map_location=self.device, kind=TRAIN_KIND)
        self.rundir.load_agent_state(self.agent, state)
        try:
            c = state["counters"]
            self.env_step, self.episode, self.eval_index = c["env_step"], c["episode"], c["eval_index"]
            self.next_eval, self.next_checkpoint = c["next_eval"], c["next_checkpoint"]
            self.wall_offset = float(state["wall_s"])
            self.last_eval = None if state["last_eval"] == -1.0 else float(state["last_eval"])
            set_global_rng_state(state["rng"])
            self.action_rng.bit_generator.state = json.loads(state["action_rng"])
            ep = state.get("episode")
            if ep is not None:
                self._resumed_episode = dict(
                    env=_to_numpy(ep["env"]), start=int(ep["start"]), seconds=float(ep["seconds"]),
                    ep_return=float(ep["return"]),
                    # per key, in update order: what _end_episode averages
                    metrics=[{k: v} for k, values in ep["metrics"].items() for v in values.unbind(0)])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is incomplete ({type(exc).__name__}: {exc})") from None
        replay_path = self.rundir.replay_path
        if self.cfg.save_replay and replay_path.exists():  # written by either storage: both read it
            self.replay.load(replay_path)
            if self.replay.transitions_written != c["transitions"]:
                raise CheckpointError(f"{replay_path} does not belong to {path} (written at another step)")
        if self._resumed_episode is None:
            self.replay.end_episode()  # the resumed run starts a new episode
        # else the replay's open episode goes on (with save_replay; without it, it is empty)
        if self.replay.transitions_written == 0:  # refill with random actions, as at the start
            self.refill_until = self.env_step + self.cfg.init_steps

    # -- loop ------------------------------------------------------------------------
    def _last_eval_text(self) -> str:
        return "n/a" if self.last_eval is None else f"{self.last_eval:.1f}"

    def _evaluate(self) -> None:
        cfg = self.cfg
        video = self.rundir.video_path(self.env_step) if cfg.video else None
        returns = evaluate(self.agent, self.eval_env, cfg.eval_episodes, cfg.seed, self.eval_index, video)
        row = dict(task=cfg.task, seed=cfg.seed, env_step=self.env_step,
                   agent_step=self.env_step // cfg.action_repeat, updates=self.agent.updates, wall_s=self.wall())
        for i, ret in enumerate(returns):
            self.eval_log.write(dict(row, eval_episode=i, **{"return": ret}))
        if returns:
            self.last_eval = float(np.mean(returns))
            self.tb.add_scalar("eval/return", self.last_eval, self.env_step)
            self.tb.add_scalar("eval/return_std", float(np.std(returns)), self.env_step)
        self.eval_index += 1
        self.next_eval += cfg.eval_every
        fault_point("eval", self.env_step, self.fault)

    def run(self, stop: StopFlag | None = None) -> dict:
        """Train to ``env_steps``; returns a summary dict (also printed unless quiet).

        ``stop`` (see :mod:`curlrl.jobs.signals`): once it is set, the run finishes the env
        step it is in, writes a checkpoint of that step (with the episode in progress) and
        returns early; the summary's ``stopped_by`` then names the signal (else None)."""
        cfg, agent, env, replay = self.cfg, self.agent, self.env, self.replay
        start_step = self.env_step
        with self.running(cfg.env_steps, "env step", initial=self.env_step) as bar:
            resumed, self._resumed_episode = self._resumed_episode, None
            if resumed is None:
                obs, _ = env.reset(seed=episode_seed(cfg.seed, self.episode))
                ep_return, ep_start, ep_metrics, t_ep = 0.0, self.env_step, [], time.time()
            else:  # the checkpoint was written mid-episode: go on with that episode
                obs = env.set_episode_state(resumed["env"])
                ep_return, ep_start, ep_metrics = resumed["ep_return"], resumed["start"], resumed["metrics"]
                t_ep = time.time() - resumed["seconds"]
            while True:
                if stop and self.env_step < cfg.env_steps:
                    self.stopped_by = stop.name
                    break
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
                    ep_metrics.append(agent.update(agent.sample(replay, cfg.batch_size)))
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
            # the episode in progress goes into this checkpoint (a stop, or the end of the run)
            self._open_episode = {"return": ep_return, "start": ep_start, "metrics": ep_metrics,
                                  "seconds": time.time() - t_ep}
            try:
                self._save_checkpoint()
            finally:
                self._open_episode = None
        return self._summary(start_step)

    def _end_episode(self, ep_return: float, length: int, metrics: list[dict], seconds: float) -> None:
        cfg = self.cfg
        # the agent's metrics are device tensors: one read per key and episode, not per update
        means = {k: float(torch.stack([m[k] for m in metrics if k in m]).mean()) for k in
                 ("critic_loss", "actor_loss", "curl_loss", "alpha", "entropy") if any(k in m for m in metrics)}
        row = dict(task=cfg.task, seed=cfg.seed, env_step=self.env_step, agent_step=self.env_step // cfg.action_repeat,
                   updates=self.agent.updates, episode=self.episode, episode_env_steps=length,
                   env_steps_per_s=length / max(seconds, 1e-9), wall_s=self.wall(), **means)
        row["return"] = ep_return
        self.train_log.write(row)
        bad = first_nonfinite(metrics, means)
        if bad is not None:  # the updates of an episode are its last len(metrics) agent steps
            i, key, value = bad
            update = self.agent.updates - len(metrics) + i + 1
            env_step = self.env_step - (len(metrics) - 1 - i) * cfg.action_repeat
            raise diverged(f"{key} is {value}", f"update {update} (env step {env_step})",
                           self.rundir.checkpoint_words())
        self.tb.add_scalar("train/return", ep_return, self.env_step)
        self.tb.add_scalar("train/env_steps_per_s", row["env_steps_per_s"], self.env_step)
        self.tb.add_scalar("train/updates", self.agent.updates, self.env_step)
        for k, v in means.items():
            self.tb.add_scalar(f"train/{k}", v, self.env_step)

    def _summary(self, start_step: int) -> dict:
        summary = dict(run_dir=str(self.run_dir), task=self.cfg.task, seed=self.cfg.seed, env_steps=self.env_step,
                       agent_steps=self.env_step // self.cfg.action_repeat, updates=self.agent.updates,
                       episodes=self.episode, last_eval_return=self.last_eval, wall_s=round(self.wall(), 1),
                       stopped_by=self.stopped_by)
        curve = self._read_curve()
        summary["plot"] = self._plot(curve)
        if not self.quiet and self.stopped_by is None:  # a stop has its own line (the command's)
            took = time.time() - self.t_start
            rate = (self.env_step - start_step) / max(took, 1e-9)
            lines = [f"\ncurlrl: {self.cfg.task} seed {self.cfg.seed}: {self.env_step} env steps "
                     f"({summary['agent_steps']} agent steps, {self.agent.updates} updates) "
                     f"in {took:.0f}s ({rate:.1f} env steps/s)",
                     f"  eval return (mean of {self.cfg.eval_episodes}) by env step: "
                     f"{curve_text(curve) if curve else self._last_eval_text()}"]
            scale = random_text(self.cfg.task)
            if scale:
                lines.append(f"  for scale, random actions score {scale}")
            if summary["plot"]:
                lines.append(f"  plot: {summary['plot']}  (curlrl plot {self.run_dir} redraws it)")
            videos = "videos/, " if self.cfg.video else ""
            lines.append(f"  run dir: {self.run_dir}  (train.csv, eval.csv, {videos}checkpoints/, TensorBoard events)")
            print("\n".join(lines))
        return summary

    def _read_curve(self) -> Curve | None:
        """The run's evaluations so far (eval.csv: earlier processes' too); None before the first."""
        if self.eval_index == 0:
            return None
        try:
            return read_curve(self.run_dir)
        except ConfigError:
            return None

    def _plot(self, curve: Curve | None) -> str | None:
        """Draw the run's evaluation curve (eval_curve.png); a failure is a warning, not the run's end."""
        if curve is None:
            return None
        try:
            return str(plot_curves([curve], self.run_dir / CURVE_PNG))
        except CurlrlError as exc:
            if not self.quiet:
                print(f"curlrl: warning: no plot: {exc}", file=sys.stderr)
            return None


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False,
          stop: StopFlag | None = None) -> dict:
    """Train (or resume) a run in ``run_dir`` and return its summary.

    ``stop``: a :class:`~curlrl.jobs.signals.StopFlag` that ends the run early, with a
    checkpoint of the step it reached (opt-in; ``curlrl train`` sets one from SIGTERM,
    SIGINT and SIGUSR1 through :func:`~curlrl.jobs.signals.stop_on_signals`).
    An Atari config (an ``atari-GAME`` task) runs DER (+ CURL): :mod:`curlrl.jobs.atari`."""
    from curlrl.jobs.config import AtariConfig

    if isinstance(cfg, AtariConfig):
        from curlrl.jobs.atari import train_atari

        return train_atari(cfg, run_dir, resume=resume, quiet=quiet, stop=stop)
    with Trainer(cfg, run_dir, resume=resume, quiet=quiet) as trainer:
        return trainer.run(stop)


def _to_tensors(obj):
    """numpy arrays (uint32 as int64) -> CPU tensors, through dicts and lists: a weights-only load reads them."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj.copy())
    if isinstance(obj, dict):
        return {k: _to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_tensors(v) for v in obj]
    return obj


def _to_numpy(obj):
    """The inverse of :func:`_to_tensors` (the env casts each array back to its dtype)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu().numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_numpy(v) for v in obj]
    return obj
