"""Subcommands of the offline workflow: collect -> pretrain -> probe -> export."""
from __future__ import annotations

import argparse

from curlrl.cli import require_at_least

FORMAT_CHOICES = ("auto", "curlrl", "videos", "frames", "vd4rl")  # curlrl.readers.FORMATS + auto


def _collect(args: argparse.Namespace) -> int:
    from curlrl.jobs.collect import collect

    require_at_least(args, episodes=1, image_size=1, action_repeat=1)
    collect(args.task, args.episodes, args.out, policy=args.policy, image_size=args.image_size,
            action_repeat=args.action_repeat, seed=args.seed)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from curlrl.errors import ConfigError
    from curlrl.jobs.pretrain import pretrain, resolve
    from curlrl.jobs.rundir import PRETRAIN_KIND, RunDir

    data_dir, overrides = args.data_dir, list(args.overrides or [])
    if args.format:
        overrides.append(f"data_format={args.format}")
    if not data_dir and not args.resume and not any(o.partition("=")[0].strip() == "data_dir" for o in overrides):
        raise ConfigError("a DATA_DIR is required (a dataset folder made by `curlrl collect`)")
    run = RunDir(args.run_dir)
    run.check_location()
    if args.resume:
        if not run.is_run():
            raise ConfigError(f"cannot resume: {run.config_path} does not exist")
        run.expect_kind(PRETRAIN_KIND)  # an agent run says so, rather than failing on its config keys
        cfg = resolve(data_dir, overrides, base=run.read_config())
    else:
        if run.has_checkpoint():
            raise ConfigError(f"run dir {run} already holds a pretrain run: pass --resume to continue it "
                              f"or choose another --run-dir")
        cfg = resolve(data_dir, overrides)
    import shlex
    import sys

    from curlrl.jobs.signals import stop_message, stop_on_signals

    resume = f"curlrl pretrain --resume --run-dir {shlex.quote(str(run.path))}"
    with stop_on_signals(resume) as stop:
        summary = pretrain(cfg, run.path, resume=args.resume, stop=stop)
    if summary["stopped_by"] is not None:
        print(stop_message(stop, f"update {summary['steps']}", resume), file=sys.stderr)
        return stop.exit_code
    print(f"curlrl: export the encoder with `curlrl export {shlex.quote(str(run.path))} --out encoder.safetensors`")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from curlrl.jobs.probe import run_probe

    require_at_least(args, image_size=0, knn_k=1, ridge_alpha=0)
    run_probe(args.encoder, args.data_dir, out=args.out, holdout=args.holdout, split_seed=args.split_seed,
              with_random=args.with_random, frame_stack=args.frame_stack, crop_size=args.crop_size,
              seed=args.seed, ridge_alpha=args.ridge_alpha, knn_k=args.knn_k, threads=args.threads,
              data_format=args.format, image_size=args.image_size)
    return 0


def _bc(args: argparse.Namespace) -> int:
    from curlrl.jobs.bc import behaviour_clone

    require_at_least(args, demos=1, episodes=1, seeds=1, steps=1, image_size=0, action_repeat=1)
    behaviour_clone(args.encoder, args.data_dir, task=args.task, demos=args.demos, episodes=args.episodes,
                    seeds=args.seeds, steps=args.steps, data_format=args.format, image_size=args.image_size,
                    action_repeat=args.action_repeat, out=args.out, threads=args.threads)
    return 0


def _export(args: argparse.Namespace) -> int:
    from curlrl.errors import ConfigError
    from curlrl.jobs.export import export_encoder

    if not args.out.endswith(".safetensors"):
        raise ConfigError(f"--out {args.out} must end in .safetensors")
    export_encoder(args.run_dir, args.out)
    return 0


def register(sub) -> None:
    """Add collect, pretrain, probe and export to the ``curlrl`` subparsers."""
    p = sub.add_parser("collect", help="collect pixel episodes (+ true state) from a task into .npz files",
                       description="Episodes as .npz (pixels (T+1,3,H,W) uint8 single frames, state, action, "
                                   "reward) plus manifest.json. Example: curlrl collect cartpole-swingup "
                                   "--episodes 40 --out data/cartpole")
    p.add_argument("task", help="DOMAIN-TASK, e.g. cartpole-swingup")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--out", required=True, help="dataset folder (must not hold a dataset yet)")
    p.add_argument("--policy", default="random", help="'random' (default) or a train run directory")
    p.add_argument("--image-size", type=int, default=None, help="rendered frame size (default 100)")
    p.add_argument("--action-repeat", type=int, default=None,
                   help="env steps per agent step (default: the task's, e.g. 8 for cartpole)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_collect)

    p = sub.add_parser("pretrain", help="contrastive (CURL/ATC) pretraining of the encoder on a dataset",
                       description="Example: curlrl pretrain data/cartpole steps=2000 batch_size=128 "
                                   "--run-dir runs/pretrain/cartpole. Keys: see curlrl.jobs.pretrain.PretrainConfig.")
    p.add_argument("data_dir", nargs="?", help="dataset folder (optional with --resume)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (steps, batch_size, positive, ...)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    p.add_argument("--format", choices=FORMAT_CHOICES, default=None,
                   help="format of DATA_DIR (default: detected; same as data_format=...)")
    p.set_defaults(func=_pretrain, positional="data_dir")

    p = sub.add_parser("probe", help="linear/kNN probes of a frozen encoder on the true state",
                       description="ENCODER: a train run dir, a pretrain run dir, a .safetensors export, "
                                   "or 'random'. Writes probe.json and probe.md.")
    p.add_argument("encoder")
    p.add_argument("data_dir")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/probe, FILE.probe/, probe-random/)")
    p.add_argument("--with-random", action="store_true", help="add a randomly initialised encoder as a baseline row")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of episodes held out (default 0.2)")
    p.add_argument("--split-seed", type=int, default=0, help="episode split seed (same default as pretrain)")
    p.add_argument("--frame-stack", type=int, default=3, help="for ENCODER=random")
    p.add_argument("--crop-size", type=int, default=84, help="for ENCODER=random")
    p.add_argument("--seed", type=int, default=0, help="init seed of random encoders")
    p.add_argument("--ridge-alpha", type=float, default=None,
                   help="ridge penalty on standardised features (default: chosen on training episodes)")
    p.add_argument("--knn-k", type=int, default=5)
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto", help="format of DATA_DIR (default: detected)")
    p.add_argument("--image-size", type=int, default=0,
                   help="bring frames to this size (centre-crop to a square, bilinear resize; 0: as stored)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all)")
    p.set_defaults(func=_probe)

    p = sub.add_parser("bc", help="behaviour cloning from a frozen encoder, rolled out in the DMC task",
                       description="ENCODER: as for probe, or a bring-your-own package.module:factory. Fits an "
                                   "MLP policy on the features of the first --demos episodes of DATA_DIR "
                                   "(which needs actions), rolls it out, reports mean return and a 95%% "
                                   "bootstrap CI over seeds.")
    p.add_argument("encoder")
    p.add_argument("data_dir")
    p.add_argument("--task", default=None, help="DMC task to roll out in (default: the dataset's)")
    p.add_argument("--demos", type=int, default=10, help="demonstration episodes (the first N; default 10)")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per seed (default 10)")
    p.add_argument("--seeds", type=int, default=3, help="policy seeds (default 3)")
    p.add_argument("--steps", type=int, default=2000, help="policy gradient steps (default 2000)")
    p.add_argument("--action-repeat", type=int, default=None, help="default: the dataset's")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto", help="format of DATA_DIR (default: detected)")
    p.add_argument("--image-size", type=int, default=0, help="bring frames to this size (0: as stored)")
    p.add_argument("--out", default=None, help="write bc.json and bc.md here")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all)")
    p.set_defaults(func=_bc)

    p = sub.add_parser("export", help="export a run's encoder as .safetensors (weights + metadata)")
    p.add_argument("run_dir", help="a train or pretrain run directory")
    p.add_argument("--out", required=True, help="output file, e.g. encoder.safetensors")
    p.set_defaults(func=_export)
