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


OBJECTIVE_NAMES = ("curl", "infonce", "moco", "byol", "barlow_twins", "swav", "supcon",
                   "contrastive", "triplet", "npair", "lifted", "nce")


@dataclass
class ObjectiveConfig:
    """The auxiliary / pretraining objective (:mod:`curlrl.objectives`) and its keys.

    Every key but ``objective`` defaults to None: the objective's own default
    (``curlrl.objectives.SPECS``). A key set for an objective that does not use it is refused."""

    objective: str = option("curl", "the contrastive / self-supervised objective on the encoder: curl (bilinear "
                                    "InfoNCE, CURL's), infonce (SimCLR NT-Xent, options tau_plus/hard_beta: DCL/HCL), "
                                    "moco, byol, barlow_twins, swav, supcon (same-episode temporal window), or the "
                                    "metric-learning losses contrastive, triplet, npair, lifted, nce "
                                    "(docs/objectives.md)", choices=OBJECTIVE_NAMES)
    temperature: float | None = option(None, "softmax temperature (infonce 0.1, moco 0.2, swav 0.1, supcon 0.1, "
                                             "nce 0.1)", check="> 0")
    projection_dim: int | None = option(None, "output size of the objective's MLP projection head, 0: no head "
                                              "(infonce, moco, byol, barlow_twins, swav: 64; barlow_twins 128)",
                                        check=">= 0")
    projection_hidden: int | None = option(None, "hidden width of the projection head and of BYOL's predictor "
                                                 "(256)", check="> 0")
    queue_size: int | None = option(None, "keys (moco, 4096) or past features (swav, 0: none) kept in a FIFO queue "
                                          "as extra negatives / Sinkhorn samples; at least batch_size", check=">= 0")
    tau_plus: float | None = option(None, "infonce: class prior of the debiased negatives estimator (DCL, Chuang "
                                          "et al. 2020); unset: plain NT-Xent", check="in [0, 1)")
    hard_beta: float | None = option(None, "infonce: concentration of the hard-negative reweighting (HCL, Robinson "
                                           "et al. 2021), inside DCL's estimator (tau_plus 0 unless set)",
                                     check=">= 0")
    barlow_lambda: float | None = option(None, "barlow_twins: weight of the off-diagonal terms (0.005)", check=">= 0")
    prototypes: int | None = option(None, "swav: number of learnable prototypes (128)", check=">= 2")
    sinkhorn_epsilon: float | None = option(None, "swav: entropy regularisation of the Sinkhorn-Knopp codes (0.05)",
                                            check="> 0")
    sinkhorn_iters: int | None = option(None, "swav: Sinkhorn-Knopp iterations (3)", check="> 0")
    margin: float | None = option(None, "margin on L2-normalised features: contrastive 1.0, triplet 0.2, "
                                        "lifted 1.0", check="> 0")
    triplet_mining: str | None = option(None, "triplet: all (every negative of the batch) or batch_hard (the "
                                              "closest negative per anchor)", choices=("all", "batch_hard"))
    supcon_window: int | None = option(None, "supcon: frames of one episode at most this many agent steps apart "
                                             "are positives of each other (3)", check=">= 0")
    supcon_group: int | None = option(None, "supcon: a batch is drawn as groups of this many frames from one "
                                            "episode window, so each anchor has several positives (4)", check=">= 2")
    supcon_form: str | None = option(None, "supcon: supcon (Khosla et al.: the mean over positives of the log "
                                           "ratio) or snn (soft nearest neighbours: the log of the summed ratio)",
                                     choices=("supcon", "snn"))


@dataclass
class _EncoderFields:
    """The pixel encoder's and its training's own fields (:class:`EncoderConfig`)."""

    crop_size: int = option(
        84, "side of the square crop the encoder sees: random crops for training, the centre crop when "
            "acting (CURL crops 100 -> 84)", check="> 0")
    augment: str = option("crop", "how the training views are drawn: crop (CURL's random crop_size window) or "
                                  "shift (centre crop, then DrQ's +-4 px shift), then optionally +jitter, "
                                  "+grayscale, +cutout, +conv (RAD's colour jitter, random grayscale, cutout, "
                                  "random convolution), each with one parameter set per frame stack, e.g. "
                                  "crop+jitter (curlrl.augment)")
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
    curl_lr: float | None = option(None, "Adam learning rate of the objective's own parameters (CURL's bilinear "
                                         "W; the heads, predictor or prototypes of the others); None: encoder_lr, "
                                         "as the reference code", check="> 0")
    encoder_tau: float = option(0.05, "EMA rate of the momentum key encoder (in the agent also the critic's "
                                      "target encoder)", check="in (0, 1]")
    target_update_every: int = option(2, "EMA step of the key encoder every N updates (in the agent the "
                                         "target Q MLPs step with it)", check="> 0")


@dataclass
class EncoderConfig(ObjectiveConfig, _EncoderFields):
    """The pixel encoder and its contrastive (CURL) training: the fields the agent
    (:class:`~curlrl.agents.AgentConfig`) and offline pretraining
    (:class:`~curlrl.jobs.pretrain.PretrainConfig`) share, the encoder's first, then the
    objective's (:class:`ObjectiveConfig`). Defaults are CURL's."""
