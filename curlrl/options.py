"""Config fields declared once, each default with its help text and checks beside it.

Pure data (no third-party imports), so the agent's :class:`~curlrl.agents.AgentConfig`
can declare its fields here in the core. :mod:`curlrl.jobs.config` reads the metadata:
it checks values with it, prints it (``curlrl config TASK --explain``) and derives which
keys reports compare with the paper and which a resumed run may change.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


def option(default: Any, help: str, *, check: str | None = None, choices: tuple | None = None,
           pattern: str | None = None, must: str | None = None, operational: bool = False,
           resumable: bool = False, compare: bool | None = None) -> Any:
    """A dataclass field carrying its meaning and its checks in ``Field.metadata``.

    Args:
        default: the default value (immutable).
        help: what the key means, with its units and the rule behind a ``None`` default.
        check: the condition a value meets, worded as the error message words it:
            ``"> 0"``, ``">= 0"``, ``">= 2"``, ``"in (0, 1]"``, ``"in [0, 1)"``.
        choices: the only values allowed.
        pattern: a regular expression the whole (string) value must match.
        must: how an error words ``choices`` or ``pattern`` ("auto, host or device");
            by default the choices listed.
        operational: the value does not change what a run learns at a given env step
            (task, seed, device, budget, cadence, logging, memory layout).
        resumable: the value may differ when a run is resumed or re-planned.
        compare: reports compare the key with the paper's setting; by default every
            key that is not operational.
    """
    if not help.strip():
        raise ValueError("every config option needs help text")
    metadata = dict(help=help, check=check, choices=tuple(choices) if choices is not None else None,
                    pattern=pattern, must=must, operational=operational, resumable=resumable,
                    compare=not operational if compare is None else compare)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class EncoderConfig:
    """The pixel encoder and its contrastive (CURL) training: the fields the agent
    (:class:`~curlrl.agents.AgentConfig`) and offline pretraining
    (:class:`~curlrl.jobs.pretrain.PretrainConfig`) share. Defaults are CURL's."""

    crop_size: int = option(
        84, "side of the square crop the encoder sees: random crops for training, the centre crop when "
            "acting (CURL crops 100 -> 84)", check="> 0")
    feature_dim: int = option(50, "encoder output size (Linear + LayerNorm after the convs)", check="> 0")
    num_layers: int = option(4, "conv layers (3x3, the first with stride 2)", check="> 0")
    num_filters: int = option(32, "channels per conv layer", check="> 0")
    encoder_tanh: bool = option(False, "tanh after the LayerNorm (the CURL paper's text) instead of none "
                                       "(its reference code)")
    encoder_lr: float = option(
        1e-3, "Adam learning rate of the contrastive (CURL) step on the encoder; pretraining steps at this "
              "rate. The agent's default encoder_adam=reference steps at 2 x this, as the reference code's two "
              "identical optimizers do; its variants also step the critic gradient on the encoder at this rate "
              "(agents/curl_sac.py). CURL uses 2e-4 for cheetah-run", check="> 0")
    curl_lr: float | None = option(None, "Adam learning rate of the bilinear W of the InfoNCE logits; None: "
                                         "encoder_lr, as the reference code", check="> 0")
    encoder_tau: float = option(0.05, "EMA rate of the momentum key encoder (in the agent also the critic's "
                                      "target encoder)", check="in (0, 1]")
    target_update_every: int = option(2, "EMA step of the key encoder every N updates (in the agent the "
                                         "target Q MLPs step with it)", check="> 0")
