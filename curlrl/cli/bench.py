"""``curlrl bench``, ``curlrl rl`` and ``curlrl report``: registered through ``curlrl.cli.EXTRA_COMMANDS``."""
from __future__ import annotations

import argparse
import sys

from curlrl.cli import require_at_least
from curlrl.errors import ConfigError


# The options that stand for run_bench's arguments (their checks live in the library).
_OPTIONS = {"seeds": "--seeds", "tasks": "--tasks", "workers": "--workers", "cpus": "--cpus",
            "signal_delay_s": "--signal-delay", "variants": "--variants", "modes": "--modes",
            "overrides": "key=value"}


def _bench(args: argparse.Namespace) -> int:
    from curlrl.jobs import bench

    tasks, overrides = [], list(args.overrides or [])
    for item in args.tasks or []:  # `--tasks a b key=v`: argparse hands key=v to --tasks
        if "=" in item:
            overrides.append(item)
        else:
            tasks += [t for t in item.split(",") if t]
    variants = [v for v in args.variants.split(",") if v] if args.variants is not None else None
    return _launch(args, lambda: bench.load_suite(args.suite), _as_overrides(_config_file(args)) + overrides,
                   tasks or None, args.seeds, variants)


def _config_file(args: argparse.Namespace) -> dict:
    """The keys of ``--config FILE`` (empty without one)."""
    if not args.config:
        return {}
    from curlrl.jobs import config as config_mod

    values = config_mod.load_yaml(args.config)
    if not isinstance(values, dict):
        raise ConfigError(f"--config {args.config}: expected a mapping of config keys")
    return values


def _as_overrides(values: dict) -> list[str]:
    """Config keys as key=value overrides (the command line's own come after them)."""
    from curlrl.jobs.bench.suite import scalar_text

    return [f"{k}={scalar_text(v)}" for k, v in values.items()]


def _rl(args: argparse.Namespace) -> int:
    from curlrl.cli import is_override
    from curlrl.jobs import bench

    words = [args.encoder, args.task, *(args.overrides or [])]
    bare = [w for w in words if not is_override(w)]
    if len(bare) != 2:
        raise ConfigError(f"give an ENCODER and a TASK, then key=value overrides; got {' '.join(bare) or 'neither'}")
    encoder, task = bare
    from_file = _config_file(args)
    budget = from_file.pop("env_steps", 100_000)  # the config file's budget, else the paper's 100k
    env_steps = args.env_steps
    if env_steps is None:
        try:
            env_steps = int(float(budget))
        except (TypeError, ValueError):
            raise ConfigError(f"--config {args.config}: env_steps must be a number, got {budget!r}") from None
    else:
        require_at_least(args, env_steps=1)
    overrides = _as_overrides(from_file) + [w for w in words if is_override(w)]
    modes = [m for m in args.modes.split(",") if m]

    def suite():
        return bench.encoder_suite(encoder, task, env_steps, args.seeds, modes)

    return _launch(args, suite, overrides, None, None, None)


def _launch(args: argparse.Namespace, suite, overrides, tasks, seeds, variants) -> int:
    """run_bench with the launcher and SLURM options of ``args``; ``suite()`` makes the suite
    (inside the handler that words the library's argument errors with their flags)."""
    from curlrl.jobs import bench

    extra = {}
    for item in args.slurm_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm-opt {item!r} is not of the form key=value (e.g. exclude=node3)")
        extra[key] = value
    try:
        time_min = bench.parse_time_min(args.time)
    except ConfigError as exc:
        raise ConfigError(f"--time: {exc}") from None
    try:
        slurm = bench.SlurmOptions(partition=args.partition, time_min=time_min,
                                   gpus=args.gpus, cpus=args.cpus, mem_gb=args.mem_gb, account=args.account,
                                   qos=args.qos, constraint=args.constraint, extra=extra,
                                   signal_delay_s=args.signal_delay)
        results = bench.run_bench(suite(), args.out, overrides, tasks, seeds, args.workers, args.launcher,
                                  slurm, report=lambda line: print(line, flush=True),
                                  progress_every=args.progress_every, variants=variants)
    except bench.ArgumentError as exc:  # worded with the flag the user typed
        if exc.argument not in _OPTIONS:
            raise
        raise ConfigError(exc.for_option(_OPTIONS[exc.argument])) from None
    except bench.BenchStopped as stop:
        print(f"curlrl bench: {stop}; run the same command again to resume", file=sys.stderr)
        return 128 + stop.signal
    except KeyboardInterrupt:
        print("curlrl bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if any(r.outcome == "failed" for r in results) else 0


def _report(args: argparse.Namespace) -> int:
    from curlrl.jobs.report import make_report

    try:
        steps = [int(float(s)) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--steps {args.steps!r}: give env steps separated by commas, e.g. 100000,500000") from None
    if not steps:
        raise ConfigError("--steps needs at least one env step")
    require_at_least(args, reps=10)
    if args.label and len(args.label) not in (1, len(args.paths)):
        raise ConfigError(f"--label given {len(args.label)} times for {len(args.paths)} paths: "
                          f"give it once or once per path")
    out = args.out or "report"
    from curlrl.jobs.report_atari import is_atari_run, make_atari_report, run_dirs_below

    kinds = {is_atari_run(d) for d in run_dirs_below(args.paths)}
    if kinds == {True, False}:
        raise ConfigError("the paths hold Atari and DeepMind Control runs: report each kind on its own")
    if kinds == {True}:
        path = make_atari_report(args.paths, out, labels=args.label, compare_published=args.compare == "published",
                                 reps=args.reps, seed=args.seed)
        print(f"curlrl report: wrote {path} (and atari_curves.png beside it)")
        return 0
    path = make_report(args.paths, out, labels=args.label, steps=steps,
                       compare_published=args.compare == "published", reps=args.reps, seed=args.seed,
                       export=args.export_csv)
    print(f"curlrl report: wrote {path} (and PNG plots in {path.parent})")
    if args.export_csv:
        print(f"curlrl report: exported eval rows to {args.export_csv}")
    return 0


def register(sub) -> None:
    """Add the ``bench``, ``rl`` and ``report`` subcommands to the ``curlrl`` parser."""
    p = sub.add_parser(
        "bench", help="train many tasks x seeds (local process pool or SLURM)",
        description="Launch one `curlrl train` per (task, seed) into OUT/runs/<task>/seed<k>. Re-running the "
                    "same command skips finished runs and resumes interrupted ones. Example: curlrl bench "
                    "--suite planet100k --seeds 5 --workers 2 batch_size=128 --out bench/planet100k")
    p.add_argument("overrides", nargs="*", help="config overrides key=value for every run (win over the suite's)")
    p.add_argument("--suite", default="planet100k",
                   help="planet100k (six PlaNet tasks, 100k env steps), planet500k, or a suite YAML file")
    p.add_argument("--tasks", nargs="+", help="only these tasks (space or comma separated)")
    p.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: the suite's; 10 for planet*)")
    p.add_argument("--variants", help="only these of the suite's variants (comma separated; default: all)")
    p.add_argument("--out", required=True, help="benchmark directory")
    _launch_options(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser(
        "rl", help="online RL from a pretrained encoder: frozen vs fine-tuned vs from scratch, side by side",
        description="ENCODER: an encoder export (.safetensors; curlrl export RUN_DIR makes one) or a "
                    "bring-your-own package.module:factory. Runs TASK x --seeds for each mode as a bench "
                    "(OUT/runs/<mode>/<task>/seed<k>; the same command resumes), then prints the modes side by "
                    "side. frozen: the conv trunk stays fixed; finetuned: all of it learns; scratch: the default "
                    "agent from a random init. Example: curlrl rl enc.safetensors cartpole-swingup --env-steps "
                    "100000 --seeds 5 --out rl/cartpole")
    p.add_argument("encoder")
    p.add_argument("task")
    p.add_argument("overrides", nargs="*", help="config overrides key=value for every run")
    p.add_argument("--env-steps", type=int, help="budget of each run (default: the --config file's env_steps, "
                                                 "else 100000)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per mode (default 5)")
    p.add_argument("--modes", default="frozen,finetuned,scratch",
                   help="comma separated, of frozen, finetuned, scratch (default: all three)")
    p.add_argument("--out", required=True, help="benchmark directory")
    _launch_options(p)
    p.set_defaults(func=_rl)
    _register_report(sub)


def _launch_options(p) -> None:
    """The config, launcher and SLURM options that ``bench`` and ``rl`` share."""
    p.add_argument("--config", help="a YAML file of config keys for every run (e.g. configs/quick-cpu.yaml); "
                                    "key=value overrides win over it")
    p.add_argument("--workers", type=int,
                   help="runs at a time (local default: max(1, cores // 4); slurm default: all at once)")
    p.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                   help="local: subprocess pool here; slurm: submitit jobs; submitit-local: submitit's "
                        "local executor (a dry run of the slurm path on this machine)")
    p.add_argument("--progress-every", type=float, default=300.0,
                   help="seconds between progress lines while runs are going (0: none)")
    g = p.add_argument_group("slurm (with --launcher slurm)")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--time", default="24:00:00",
                   help="time limit per job (HH:MM:SS, D-HH:MM:SS, minutes); a timed-out job is re-queued and resumes")
    g.add_argument("--gpus", type=int, help="GPUs per job")
    g.add_argument("--cpus", type=int, default=4, help="CPUs per job; also the run's threads (default 4)")
    g.add_argument("--mem-gb", type=float, help="memory per job in GB")
    g.add_argument("--account", help="SLURM account")
    g.add_argument("--qos", help="SLURM QOS")
    g.add_argument("--constraint", help="SLURM constraint (e.g. a100)")
    g.add_argument("--signal-delay", type=int, default=180,
                   help="seconds before the time limit at which a job is told to checkpoint and requeue "
                        "(default 180; leave room for a checkpoint with its replay)")
    g.add_argument("--slurm-opt", action="append", metavar="KEY=VALUE", help="any further sbatch option, repeatable")


def _register_report(sub) -> None:
    p = sub.add_parser(
        "report", help="Markdown + PNG report of benchmark runs (rliable statistics)",
        description="Read every eval.csv below DIRs (or CSVs from --export-csv) and write report.md with "
                    "per-task tables, aggregate IQM/median/mean/optimality gap with 95% bootstrap CIs, "
                    "performance profiles and sample-efficiency curves. Example: curlrl report bench/planet100k "
                    "--compare published --out report/planet100k")
    p.add_argument("paths", nargs="+", metavar="DIR_OR_CSV", help="benchmark/run directories or exported CSVs")
    p.add_argument("--out", help="report directory (default ./report)")
    p.add_argument("--compare", choices=["published"], help="add the published numbers side by side")
    p.add_argument("--label", action="append",
                   help="algorithm name instead of curl / pixel_sac_crop: once for all paths or once per path")
    p.add_argument("--steps", default="100000,500000", help="env steps to tabulate, comma separated")
    p.add_argument("--reps", type=int, default=5000, help="bootstrap replications (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    p.add_argument("--export-csv", metavar="FILE", help="also write the eval rows (and settings) to FILE")
    p.set_defaults(func=_report)
