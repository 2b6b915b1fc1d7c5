"""Load the encoder of a train run, a pretrain run or an export; export it as safetensors.

``curlrl export RUN_DIR --out encoder.safetensors`` writes the (critic / online) encoder
weights with metadata (obs shape, feature_dim, num_layers, num_filters, output_tanh,
normalisation "uint8/255", source) and, when the run has one, the CURL head's ``W`` as
``curl_head.W``. Load it with :meth:`curlrl.encoder.PixelEncoder.from_pretrained`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from curlrl.contrastive import CurlHead
from curlrl.encoder import ForeignEncoder, ForeignPixelEncoder, PixelEncoder, read_export
from curlrl.errors import CheckpointError, ConfigError, first_line


@dataclass
class LoadedEncoder:
    """An encoder with what came with it.

    ``encoder``: a :class:`PixelEncoder`; for a train run with a bring-your-own trunk
    (``encoder_module``) a :class:`ForeignPixelEncoder`; for a ``module:factory`` spec the
    bare :class:`ForeignEncoder`.
    ``key_encoder``: the momentum (EMA) copy when the source had one, else None.
    ``curl_head``: the trained bilinear head when the source had one, else None.
    ``source``: a description (path and kind) for reports and export metadata.
    """

    encoder: PixelEncoder | ForeignPixelEncoder | ForeignEncoder
    key_encoder: PixelEncoder | ForeignPixelEncoder | None
    curl_head: CurlHead | None
    source: str


def _rebuild(make, *states: dict | None) -> list[torch.nn.Module | None]:
    """An encoder ``make()`` per state with the state loaded, in eval mode (None for None)."""
    out: list[torch.nn.Module | None] = []
    for state in states:
        if state is None:
            out.append(None)
            continue
        enc = make()
        enc.load_state_dict(state)
        out.append(enc.eval())
    return out


def _head(state: dict | None, feature_dim: int) -> CurlHead | None:
    if state is None:
        return None
    head = CurlHead(feature_dim)
    head.load_state_dict(state)
    return head.eval()


def make_foreign(spec: str) -> ForeignEncoder:
    """Import and call a bring-your-own factory, ``"package.module:factory"``: it returns a
    :class:`curlrl.encoder.ForeignEncoder` (or an ``nn.Module`` with ``obs_shape`` (3k, S, S)
    and ``feature_dim`` attributes, which is wrapped with no normalisation). The module comes
    as the factory made it: neither frozen nor put in eval mode (callers decide)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"encoder {spec!r}: cannot import {attr!r} from {module_name!r} "
                          f"({first_line(exc)})") from None
    made = factory()
    if not isinstance(made, ForeignEncoder):
        if not isinstance(made, torch.nn.Module) or not hasattr(made, "obs_shape") or not hasattr(made, "feature_dim"):
            raise ConfigError(f"encoder {spec!r}: the factory must return a curlrl.encoder.ForeignEncoder or a "
                              f"torch module with obs_shape and feature_dim attributes, got {type(made).__name__}")
        made = ForeignEncoder(made, tuple(made.obs_shape), int(made.feature_dim), name=spec)
    return made


def load_foreign(spec: str) -> LoadedEncoder:
    """A bring-your-own encoder (:func:`make_foreign`), frozen and in eval mode, for probe and bc."""
    made = make_foreign(spec)
    return LoadedEncoder(made.eval().requires_grad_(False), None, None, f"{spec} (bring your own)")


def load_encoder(spec: str | Path, map_location: str = "cpu") -> LoadedEncoder:
    """Encoder of a train run dir, a pretrain run dir, a ``.safetensors`` export or a
    bring-your-own ``"package.module:factory"`` (:func:`load_foreign`)."""
    from curlrl.jobs import config as config_mod
    from curlrl.jobs.pretrain import resolve as resolve_pretrain
    from curlrl.jobs.rundir import PRETRAIN_KIND, RunDir, checkpoint_kind

    path = Path(spec)
    if isinstance(spec, str) and ":" in spec and not path.exists():
        return load_foreign(spec)
    if path.is_file():
        meta, tensors = read_export(path)
        encoder = PixelEncoder.from_pretrained(path).eval()
        head = None
        if "curl_head.W" in tensors:
            head = _head({"W": tensors["curl_head.W"]}, encoder.feature_dim)
        return LoadedEncoder(encoder, None, head, f"{path} ({meta.get('source', '')})")
    if not path.is_dir():
        raise ConfigError(f"encoder {spec} is neither a run directory nor a .safetensors file")
    run = RunDir(path)
    base = run.read_config()
    state = run.load_checkpoint(map_location=map_location)
    pretrained = checkpoint_kind(state, run.checkpoint_path) == PRETRAIN_KIND
    cfg = (resolve_pretrain if pretrained else config_mod.resolve)(None, base=base)
    foreign = "" if pretrained else cfg.encoder_module
    if foreign:  # the factory again (once), then the run's weights over it, trunk included
        import copy

        trunk = make_foreign(foreign)

        def make():
            return ForeignPixelEncoder(copy.deepcopy(trunk), cfg.feature_dim, cfg.encoder_tanh)
    else:
        def make():
            return PixelEncoder((3 * cfg.frame_stack, cfg.crop_size, cfg.crop_size), cfg.feature_dim,
                                cfg.num_layers, cfg.num_filters, cfg.encoder_tanh)
    try:
        if pretrained:
            enc, key = _rebuild(make, state["encoder"], state["key_encoder"])
            head = _head(state.get("curl_head"), cfg.feature_dim)  # None: another objective
            kind = f"pretrain run, {state['step']} updates"
        else:
            mods = state["agent"]["modules"]
            enc, key = _rebuild(make, mods["encoder"], mods.get("encoder_target"))
            head = _head(mods.get("curl_head"), cfg.feature_dim)
            kind = f"train run, {state['counters']['env_step']} env steps"
            if foreign:
                kind += f", trunk {foreign}"
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = first_line(exc)
        raise CheckpointError(f"checkpoint {run.checkpoint_path} does not match its config ({first})") from None
    return LoadedEncoder(enc, key, head, f"{path} ({kind})")


def export_encoder(run_dir: str | Path, out: str | Path, quiet: bool = False) -> Path:
    """Write the run's encoder (+ CURL head W) to ``out`` (.safetensors), atomically."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"export path {out} must end in .safetensors")
    loaded = load_encoder(run_dir)
    if not isinstance(loaded.encoder, PixelEncoder):
        raise ConfigError(f"cannot export {loaded.source}: a bring-your-own trunk does not fit a curlrl encoder "
                          f"file (the weights of a PixelEncoder); probe and bc take {run_dir} itself")
    extra = {"curl_head.W": loaded.curl_head.W} if loaded.curl_head is not None else None
    loaded.encoder.save_pretrained(out, source=loaded.source, extra_tensors=extra)
    if not quiet:
        cfg = loaded.encoder.config()
        print(f"curlrl: wrote {out}: encoder {cfg['obs_shape']} -> {cfg['feature_dim']} features "
              f"from {loaded.source}")
    return out


def random_encoder(obs_shape: tuple[int, int, int], seed: int = 0, **kwargs) -> PixelEncoder:
    """A randomly initialised encoder (the probe's baseline), reproducible by ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return PixelEncoder(obs_shape, **kwargs).eval()


def random_loaded(obs_shape: tuple[int, int, int], seed: int = 0, **kwargs) -> LoadedEncoder:
    """:func:`random_encoder` as a :class:`LoadedEncoder` (no key encoder, no head): the
    ``random`` baseline of probe and bc."""
    return LoadedEncoder(random_encoder(obs_shape, seed, **kwargs), None, None, f"random init (seed {seed})")
