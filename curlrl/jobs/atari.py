"""The Atari-100k training loop: DER (+ CURL) on one game, both evaluation protocols.

``curlrl train atari-boxing`` comes here (:func:`curlrl.jobs.train.train` sends every
``atari-*`` task). One loop iteration is one agent step, as Kaixhin/curl_rainbow run it:
act (fresh noise, greedy on the noisy Q), step the training env (clipped rewards, a life
loss ends the agent's episode and the game goes on), add the transition to the prioritised
replay, then, from ``learn_start`` agent steps on, one update on a prioritised batch and its
new priorities. The run directory is a training run's (:mod:`curlrl.jobs.rundir`):

    train.csv        one row per *game* (all its lives): the raw score (``return``), the
                     clipped sum the agent learned from, its agent steps, lives lost, the mean
                     losses of its updates
    eval.csv         evaluations during training at every ``eval_every`` agent steps (10
                     episodes, noise off, epsilon 0.001, whole games, raw scores): the
                     *best* of them is CURL's protocol
    final_eval.csv   the final evaluation (``final_eval_episodes``, 100): rliable's protocol
    checkpoints/     exactly at every ``checkpoint_every`` agent steps and at a stop, mid-game
                     included (the console's state, frame stack and RNGs are saved), with the
                     replay: a resumed CPU run equals the uninterrupted one

Step counts (config, logs, x-axes) are agent steps; ``frames`` = 4 x agent steps.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from curlrl.agents.der import DerAgent
from curlrl.errors import CheckpointError
from curlrl.jobs.config import AtariConfig, der_config
from curlrl.jobs.divergence import diverged, first_nonfinite_in_modules
from curlrl.jobs.episodes import episode_seed
from curlrl.jobs.faults import configured_fault, fault_point
from curlrl.jobs.rngstate import global_rng_state, set_global_rng_state
from curlrl.jobs.rundir import CHECKPOINT_VERSION, TRAIN_KIND, RunDir
from curlrl.jobs.signals import StopFlag
from curlrl.jobs.writer import RunWriter
from curlrl.per import PrioritizedReplay

FRAMES_PER_STEP = 4
EVAL_SEED_OFFSET = 10_000
FINAL_EVAL_CSV = "final_eval.csv"
METRICS = ("loss", "c51_loss", "curl_loss", "q_mean", "grad_norm")
ATARI_TRAIN_COLUMNS = ["task", "seed", "env_step", "agent_step", "frames", "updates", "game", "return",
                       "clipped_return", "game_steps", "lives_lost", "env_steps_per_s", *METRICS, "wall_s"]
ATARI_EVAL_COLUMNS = ["task", "seed", "env_step", "agent_step", "frames", "updates", "eval_episode", "return",
                      "episode_steps", "wall_s"]


def build_atari_envs(cfg: AtariConfig):
    """The training env (seeded by the run's seed) and the evaluation env of ``cfg``."""
    from curlrl.envs.atari import make_atari_env

    kw = dict(noop_max=cfg.noop_max, max_frames=cfg.max_frames)
    return (make_atari_env(cfg.task, seed=cfg.seed, training=True, **kw),
            make_atari_env(cfg.task, seed=cfg.seed + EVAL_SEED_OFFSET, training=False, **kw))


def build_der_agent(cfg: AtariConfig, num_actions: int, device: torch.device) -> DerAgent:
    return DerAgent(num_actions, der_config(cfg), device=device, seed=cfg.seed)


def evaluate_der(agent: DerAgent, env, episodes: int, seed: int, eval_index: int, salt: int = 1,
                 video_path: Path | None = None) -> list[tuple]:
    """(raw score, agent steps) of ``episodes`` whole games, noise off, epsilon-greedy with the
    agent's ``eval_epsilon``. Game ``ep`` of evaluation ``eval_index`` starts from a fixed seed,
    which also seeds its epsilon draws: the scores depend on the weights alone, not on what
    the run did before (a resumed or extended run evaluates as the uninterrupted one).
    ``video_path``: an mp4 of the first game as the agent sees it (84x84 grayscale)."""
    out, frames = [], []
    for ep in range(episodes):
        game_seed = episode_seed(seed, eval_index * 1000 + ep, salt=salt)
        obs, _ = env.reset(seed=game_seed)
        rng = np.random.default_rng(game_seed)
        total, steps, done = 0.0, 0, False
        while not done:
            if ep == 0 and video_path is not None:
                frames.append(np.repeat(obs[-1][:, :, None], 3, axis=2))
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, eval=True, rng=rng))
            total, steps = total + reward, steps + 1
            done = terminated or truncated
        out.append((total, steps))
    if video_path is not None and frames:
        from curlrl.jobs.logs import write_video

        write_video(video_path, frames)
    return out


def load_der_checkpoint(run: RunDir, device) -> dict:
    """The checkpoint of an Atari run; CheckpointError if it is not one (another kind of run,
    or a DeepMind Control agent's)."""
    state = run.load_checkpoint(map_location=device, kind=TRAIN_KIND)
    if state.get("agent_kind") != "der":
        raise CheckpointError(f"checkpoint {run.checkpoint_path} is of a DeepMind Control run, not an Atari one")
    return state


def evaluate_atari_run(run: RunDir, cfg: AtariConfig, episodes: int, video: bool) -> dict:
    """``curlrl eval`` of an Atari run: ``episodes`` games of its checkpoint's agent (noise off,
    epsilon ``eval_epsilon``), raw scores; nothing is appended to its logs."""
    from curlrl.jobs.host import resolve_device

    device = resolve_device(cfg.device)
    state = load_der_checkpoint(run, device)
    _, eval_env = build_atari_envs(cfg)
    agent = build_der_agent(cfg, int(eval_env.action_space.n), device)
    run.load_agent_state(agent, state)
    try:
        step = int(state["counters"]["env_step"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {run.checkpoint_path} has no env_step counter") from None
    path = run.video_path(step, final=True) if video else None
    results = evaluate_der(agent, eval_env, episodes, cfg.seed, eval_index=10**6, salt=3, video_path=path)
    scores = [r[0] for r in results]
    return dict(run_dir=str(run), env_step=step, returns=scores, mean=float(np.mean(scores)),
                std=float(np.std(scores)), video=str(path) if path else None)


class AtariTrainer(RunWriter):
    """Owns one Atari run: envs, DER agent, prioritised replay, logs and checkpoints."""

    def __init__(self, cfg: AtariConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> None:
        self.fault = configured_fault()
        super().__init__(cfg, run_dir, quiet)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.env, self.eval_env = build_atari_envs(cfg)
        self.agent = build_der_agent(cfg, int(self.env.action_space.n), self.device)
        self.replay = PrioritizedReplay(cfg.replay_capacity, (84, 84), 4, n_step=cfg.n_step, discount=cfg.discount,
                                        alpha=cfg.priority_alpha, seed=cfg.seed)
        self.env_step = self.games = self.eval_index = 0
        self.next_eval, self.next_checkpoint = cfg.eval_every, cfg.checkpoint_every
        self.final_done_at = -1     # env step of the last final evaluation written
        self.last_eval: float | None = None
        self.best_eval: float | None = None
        self.stopped_by: str | None = None
        self.game = self._new_game()
        self._resumed_env: dict | None = None
        if resume:
            self._load_checkpoint()
        self.train_log, self.eval_log, self.final_log = self.open_files(
            [(RunDir.TRAIN_CSV, ATARI_TRAIN_COLUMNS, lambda r: int(r["env_step"]) <= self.env_step),
             (RunDir.EVAL_CSV, ATARI_EVAL_COLUMNS, lambda r: int(r["env_step"]) < self.next_eval),
             (FINAL_EVAL_CSV, ATARI_EVAL_COLUMNS, lambda r: int(r["env_step"]) <= self.final_done_at)],
            resume_step=self.env_step if resume else None)

    @staticmethod
    def _new_game() -> dict:
        return {"return": 0.0, "clipped": 0.0, "steps": 0, "lives_lost": 0, "seconds": 0.0,
                "sums": {k: 0.0 for k in METRICS}, "updates": 0}

    # -- checkpoints -----------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        agent = self.agent
        bad = first_nonfinite_in_modules(agent.modules())
        if bad is not None:
            raise diverged(f"agent parameter {bad} is not finite", f"update {agent.updates} (agent step "
                           f"{self.env_step})", self.rundir.checkpoint_words())
        game = dict(self.game, sums=json.dumps(self.game["sums"]))
        state = {
            "kind": TRAIN_KIND, "version": CHECKPOINT_VERSION, "agent_kind": "der",
            "config": json.dumps(asdict(self.cfg)),
            "agent": agent.state_dict(),
            "counters": dict(env_step=self.env_step, episode=self.games, next_eval=self.next_eval,
                             next_checkpoint=self.next_checkpoint, eval_index=self.eval_index,
                             final_done_at=self.final_done_at, transitions=self.replay.transitions_written),
            "wall_s": self.wall(),
            "last_eval": -1e30 if self.last_eval is None else self.last_eval,
            "best_eval": -1e30 if self.best_eval is None else self.best_eval,
            "rng": global_rng_state(),
            "env": {k: torch.from_numpy(np.asarray(v).copy()) for k, v in self.env.get_episode_state().items()},
            "game": game,
        }
        self.rundir.save_checkpoint(state, replay=self.replay if self.cfg.save_replay else None)
        fault_point("checkpoint", self.env_step, self.fault)

    def _load_checkpoint(self) -> None:
        self.check_resumable()
        path = self.rundir.checkpoint_path
        state = load_der_checkpoint(self.rundir, self.device)
        self.rundir.load_agent_state(self.agent, state)
        try:
            c = state["counters"]
            self.env_step, self.games, self.eval_index = int(c["env_step"]), int(c["episode"]), int(c["eval_index"])
            self.next_eval, self.next_checkpoint = int(c["next_eval"]), int(c["next_checkpoint"])
            self.final_done_at = int(c["final_done_at"])
            self.wall_offset = float(state["wall_s"])
            self.last_eval = None if state["last_eval"] == -1e30 else float(state["last_eval"])
            self.best_eval = None if state["best_eval"] == -1e30 else float(state["best_eval"])
            set_global_rng_state(state["rng"])
            self._resumed_env = {k: v.cpu().numpy() for k, v in state["env"].items()}
            game = dict(state["game"])
            game["sums"] = json.loads(game["sums"])
            self.game = game
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is incomplete ({type(exc).__name__}: {exc})") from None
        if self.cfg.save_replay and self.rundir.replay_path.exists():
            self.replay.load(self.rundir.replay_path)
            if self.replay.transitions_written != int(c["transitions"]):
                raise CheckpointError(f"{self.rundir.replay_path} does not belong to {path} (written at another step)")
        else:  # no saved replay: it refills from here (the run is no longer exact)
            self.replay.end_episode()

    # -- evaluation ------------------------------------------------------------------
    def _rows(self, log, results: list[tuple]) -> None:
        base = dict(task=self.cfg.task, seed=self.cfg.seed, env_step=self.env_step, agent_step=self.env_step,
                    frames=self.env_step * FRAMES_PER_STEP, updates=self.agent.updates, wall_s=self.wall())
        for i, (score, steps) in enumerate(results):
            log.write(dict(base, eval_episode=i, episode_steps=steps, **{"return": score}))

    def _evaluate(self) -> None:
        cfg = self.cfg
        results = evaluate_der(self.agent, self.eval_env, cfg.eval_episodes, cfg.seed, self.eval_index)
        self._rows(self.eval_log, results)
        if results:
            self.last_eval = float(np.mean([r[0] for r in results]))
            self.best_eval = self.last_eval if self.best_eval is None else max(self.best_eval, self.last_eval)
            self.tb.add_scalar("eval/return", self.last_eval, self.env_step)
        self.eval_index += 1
        self.next_eval += cfg.eval_every
        fault_point("eval", self.env_step, self.fault)

    def _final_evaluation(self) -> float | None:
        cfg = self.cfg
        if cfg.final_eval_episodes == 0:
            self.final_done_at = self.env_step  # nothing to evaluate: done
            return None
        # its own seeds (salt 2): the same games whenever the run ends at this step
        results = evaluate_der(self.agent, self.eval_env, cfg.final_eval_episodes, cfg.seed, self.env_step, salt=2)
        self._rows(self.final_log, results)
        self.final_done_at = self.env_step
        score = float(np.mean([r[0] for r in results]))
        self.tb.add_scalar("eval/final_return", score, self.env_step)
        return score

    # -- the loop --------------------------------------------------------------------
    def _end_game(self) -> None:
        g, cfg = self.game, self.cfg
        n = max(g["updates"], 1)
        means = {k: (v / n if g["updates"] else "") for k, v in g["sums"].items()}
        if not self.cfg.curl:
            means["curl_loss"] = ""
        row = dict(task=cfg.task, seed=cfg.seed, env_step=self.env_step, agent_step=self.env_step,
                   frames=self.env_step * FRAMES_PER_STEP, updates=self.agent.updates, game=self.games,
                   clipped_return=g["clipped"], game_steps=g["steps"], lives_lost=g["lives_lost"],
                   env_steps_per_s=g["steps"] / max(g["seconds"], 1e-9), wall_s=self.wall(), **means)
        row["return"] = g["return"]
        self.train_log.write(row)
        self.tb.add_scalar("train/return", g["return"], self.env_step)
        self.tb.add_scalar("train/updates", self.agent.updates, self.env_step)
        for k, v in means.items():
            if v != "":
                self.tb.add_scalar(f"train/{k}", v, self.env_step)
        self.games += 1
        self.game = self._new_game()

    def run(self, stop: StopFlag | None = None) -> dict:
        """Train to ``env_steps`` agent steps, then the final evaluation; returns a summary."""
        cfg, agent, env, replay = self.cfg, self.agent, self.env, self.replay
        start_step = self.env_step
        final_score = None
        with self.running(cfg.env_steps, "agent step", initial=self.env_step) as bar:
            if self._resumed_env is not None:
                obs, self._resumed_env = env.set_episode_state(self._resumed_env), None
            else:
                obs, _ = env.reset()
            t_last = time.time()
            while True:
                if stop and self.env_step < cfg.env_steps:
                    self.stopped_by = stop.name
                    break
                if self.env_step >= self.next_eval:
                    self._evaluate()
                    bar.set_postfix(eval_return=self._text(self.last_eval), updates=agent.updates, refresh=False)
                if self.env_step >= cfg.env_steps:
                    if self.final_done_at != self.env_step:
                        final_score = self._final_evaluation()
                    break
                action = agent.act(obs)
                next_obs, reward, terminated, truncated, info = env.step(action)
                replay.add(obs, action, reward, next_obs, terminated, truncated)
                obs = next_obs
                self.env_step += 1
                g = self.game
                g["return"] += info["raw_reward"]
                g["clipped"] += reward
                g["steps"] += 1
                g["lives_lost"] += int(info["life_loss"])
                if self.env_step >= cfg.learn_start:
                    batch = replay.sample(cfg.batch_size, agent.beta)
                    metrics = agent.update(batch)
                    replay.update_priorities(batch["index"], metrics.pop("priorities"))
                    g["updates"] += 1
                    for k in METRICS:
                        if k in metrics:
                            g["sums"][k] += float(metrics[k])
                now = time.time()
                g["seconds"] += now - t_last
                t_last = now
                bar.update(1)
                if terminated or truncated:
                    if truncated or not info["life_loss"]:  # the game is over (a life loss goes on)
                        score = g["return"]
                        self._end_game()
                        bar.set_postfix(game_score=f"{score:.0f}", eval_return=self._text(self.last_eval),
                                        updates=agent.updates, refresh=False)
                    obs, _ = env.reset()
                if self.env_step >= self.next_checkpoint:
                    while self.next_checkpoint <= self.env_step:
                        self.next_checkpoint += cfg.checkpoint_every
                    self._save_checkpoint()
            self._save_checkpoint()
        return self._summary(start_step, final_score)

    def _plot(self) -> str | None:
        """Draw eval_curve.png (evaluations so far, references); a failure is a warning only."""
        import sys

        from curlrl.errors import CurlrlError
        from curlrl.jobs.plot import CURVE_PNG, plot_curves, read_curve

        if self.eval_index == 0:
            return None
        try:
            return str(plot_curves([read_curve(self.run_dir)], self.run_dir / CURVE_PNG))
        except CurlrlError as exc:
            if not self.quiet:
                print(f"curlrl: warning: no plot: {exc}", file=sys.stderr)
            return None

    @staticmethod
    def _text(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    def _summary(self, start_step: int, final_score: float | None) -> dict:
        cfg = self.cfg
        summary = dict(run_dir=str(self.run_dir), task=cfg.task, seed=cfg.seed, env_steps=self.env_step,
                       agent_steps=self.env_step, updates=self.agent.updates, episodes=self.games,
                       last_eval_return=self.last_eval, best_eval_return=self.best_eval,
                       final_eval_return=final_score, wall_s=round(self.wall(), 1), stopped_by=self.stopped_by)
        summary["plot"] = self._plot()
        if not self.quiet and self.stopped_by is None:
            from curlrl.jobs.published_atari import atari_scale_text

            took = time.time() - self.t_start
            rate = (self.env_step - start_step) / max(took, 1e-9)
            evals = self.rundir.evals()
            curve = " | ".join(f"{s / 1000:g}k: {np.mean(v):.1f}" for s, v in sorted(evals.items())) or "none yet"
            lines = [f"\ncurlrl: {cfg.task} seed {cfg.seed} ({'CURL' if cfg.curl else 'DER'}): {self.env_step} agent "
                     f"steps ({self.env_step * FRAMES_PER_STEP} frames, {self.agent.updates} updates, "
                     f"{self.games} games) in {took:.0f}s ({rate:.1f} agent steps/s)",
                     f"  eval score (mean of {cfg.eval_episodes}) by agent step: {curve}"]
            if final_score is not None:
                lines.append(f"  final evaluation ({cfg.final_eval_episodes} games): {final_score:.1f}   "
                             f"best of the evaluations (CURL's protocol): {self._text(self.best_eval)}")
            scale = atari_scale_text(cfg.task)
            if scale:
                lines.append(f"  for scale: {scale}")
            if summary["plot"]:
                lines.append(f"  plot: {summary['plot']}  (curlrl plot {self.run_dir} redraws it)")
            lines.append(f"  run dir: {self.run_dir}  (train.csv, eval.csv, {FINAL_EVAL_CSV}, checkpoints/, "
                         f"TensorBoard events)")
            print("\n".join(lines))
        return summary


def train_atari(cfg: AtariConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False,
                stop: StopFlag | None = None) -> dict:
    """Train (or resume) an Atari-100k run in ``run_dir`` and return its summary."""
    with AtariTrainer(cfg, run_dir, resume=resume, quiet=quiet) as trainer:
        return trainer.run(stop)
