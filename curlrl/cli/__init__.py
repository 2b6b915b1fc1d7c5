"""The ``curlrl`` command line. User mistakes print one line and exit with code 2."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from pathlib import Path

# Modules that add subcommands: each defines register(subparsers), whose parsers set
# `func` (a callable taking the parsed args and returning an exit code).
EXTRA_COMMANDS: tuple[str, ...] = ("curlrl.cli.offline", "curlrl.cli.bench")
# Commands that run updates: worth restarting under tcmalloc (see _use_tcmalloc).
TRAINING_COMMANDS = ("train", "bench", "rl", "pretrain")


def is_override(item: str) -> bool:
    """Whether a command-line word is a ``key=value`` override (an existing path never is one)."""
    return "=" in item and not Path(item).exists()


def place_positional(args: argparse.Namespace, slot: str) -> None:
    """Put a command's one positional word in ``args.<slot>`` and every ``key=value`` in
    ``args.overrides``, whatever order they came in.

    argparse fills the positional slot with the first free word and the overrides with the
    rest, so without this ``curlrl train batch_size=64 cartpole-swingup`` reads the task as
    ``batch_size=64``, and ``curlrl train --resume --run-dir R env_steps=2000`` (no task)
    an override as the task. A second bare word stays among the overrides, where the config
    parser names it as not ``key=value``. The slot is None when no bare word was given.
    """
    given = getattr(args, slot, None)
    items = ([given] if given is not None else []) + list(getattr(args, "overrides", None) or [])
    word = next((item for item in items if not is_override(item)), None)
    if word is not None:
        items.remove(word)
    setattr(args, slot, word)
    args.overrides = items


def _use_tcmalloc(command: str) -> None:
    """Restart a training command under tcmalloc (:func:`curlrl.jobs.host.reexec_with_tcmalloc`)."""
    if command in TRAINING_COMMANDS:
        from curlrl.jobs.host import reexec_with_tcmalloc

        reexec_with_tcmalloc()


def _train(args: argparse.Namespace) -> int:
    from curlrl.jobs import config as config_mod
    from curlrl.errors import ConfigError
    from curlrl.jobs.rundir import TRAIN_KIND, RunDir
    from curlrl.jobs.train import train

    if args.resume:
        if not args.run_dir:
            raise ConfigError("--resume needs --run-dir DIR (the run to continue)")
        saved = RunDir(args.run_dir)
        if not saved.is_run():
            raise ConfigError(f"cannot resume: {saved.config_path} does not exist")
        saved.expect_kind(TRAIN_KIND)  # a pretraining run says so, rather than failing on its config keys
        cfg = config_mod.resolve(args.task, args.config, args.overrides, base=saved.read_config())
    else:
        cfg = config_mod.resolve(args.task, args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.task / f"seed{cfg.seed}"
    if not args.resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"run dir {run_dir} is not empty: pass --resume to continue its run "
                          f"or choose another --run-dir")
    import shlex

    from curlrl.jobs.signals import stop_message, stop_on_signals

    resume = f"curlrl train --resume --run-dir {shlex.quote(str(run_dir))}"
    with stop_on_signals(resume) as stop:
        summary = train(cfg, run_dir, resume=args.resume, stop=stop)
    if summary["stopped_by"] is not None:
        print(stop_message(stop, f"env step {summary['env_steps']}", resume), file=sys.stderr)
        return stop.exit_code
    return 0


def _config(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from curlrl.jobs import config as config_mod

    cfg = config_mod.resolve(args.task, args.config, args.overrides)
    if args.explain:
        print(config_mod.explain(cfg), end="")
    else:
        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
    return 0


def require_at_least(args: argparse.Namespace, **minimums: float) -> None:
    """One line naming the flag (``--knn-k must be >= 1, got 0``) for the first option below its
    minimum; options left unset (None) are not checked."""
    from curlrl.errors import ConfigError

    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def _eval(args: argparse.Namespace) -> int:
    from curlrl.jobs.evaluate import evaluate_run

    require_at_least(args, episodes=1)
    evaluate_run(args.run_dir, episodes=args.episodes, video=not args.no_video, device=args.device)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from curlrl.jobs.plot import plot_runs

    out = plot_runs(args.run_dirs, args.out, args.label)
    print(f"curlrl: wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curlrl", description="CURL: contrastive pixel RL on DeepMind Control.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a CURL-SAC agent from pixels",
                       description="Train on a dm_control task. Step counts are ENVIRONMENT steps "
                                   "(agent steps x action_repeat). Example: curlrl train cartpole-swingup "
                                   "batch_size=128 env_steps=20000")
    p.add_argument("task", nargs="?", help="DOMAIN-TASK, e.g. cartpole-swingup (optional with --resume)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (see `curlrl config TASK --explain`)")
    p.add_argument("--config", help="YAML file of config keys, applied after configs/<task>.yaml")
    p.add_argument("--run-dir", help="run directory (default runs/<task>/seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.set_defaults(func=_train, positional="task", positional_missing="a TASK is required (e.g. cartpole-swingup)")

    p = sub.add_parser("config", help="print the resolved config of a task")
    p.add_argument("task", nargs="?", help="DOMAIN-TASK, e.g. cartpole-swingup")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    p.add_argument("--config", help="YAML file of config keys, applied after configs/<task>.yaml")
    p.add_argument("--explain", action="store_true",
                   help="comment every key with its type, checks and meaning; mark the operational keys")
    p.set_defaults(func=_config, positional="task", positional_missing="a TASK is required (e.g. cartpole-swingup)")

    p = sub.add_parser("eval", help="evaluate a run's latest checkpoint and write a video")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--device", default=None, help="override the run's device (e.g. cpu)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("plot", help="PNG of training runs' evaluation return against env steps",
                       description="Draw the evaluation curve of one or more training runs with the random "
                                   "policy's return on the task and the paper's results as reference lines. "
                                   "Example: curlrl plot runs/cartpole-swingup/seed0 (writes "
                                   "runs/cartpole-swingup/seed0/eval_curve.png)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/eval_curve.png for one run, "
                                 "./eval_curves.png for several)")
    p.add_argument("--label", action="append", help="legend name of each run (once per RUN_DIR)")
    p.set_defaults(func=_plot)

    for module in EXTRA_COMMANDS:
        import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from curlrl.errors import CurlrlError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere, also after options such as --run-dir
    bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    slot = getattr(args, "positional", None)
    if slot:
        place_positional(args, slot)
        missing = getattr(args, "positional_missing", None)
        if getattr(args, slot) is None and missing and not getattr(args, "resume", False):
            parser.exit(2, f"curlrl {args.command}: error: {missing}\n")
    if argv is None:  # a real command line (not main([...]) called from Python)
        _use_tcmalloc(args.command)
    try:
        return args.func(args)
    except CurlrlError as exc:
        print(f"curlrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("curlrl: interrupted; resume with --resume --run-dir (last checkpoint kept)", file=sys.stderr)
        return 130

