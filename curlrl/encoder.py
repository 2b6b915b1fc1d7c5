"""The pixel encoder shared by the agent, offline pretraining and probes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from curlrl.checkpoint import atomic_file
from curlrl.errors import CheckpointError, first_line, write_error

EXPORT_FORMAT = "curlrl.PixelEncoder/1"  # safetensors metadata "format" of an encoder export


def conv_output_size(image_size: int, num_layers: int) -> int:
    """Spatial size after the conv stack: one stride-2 layer, then stride-1 layers."""
    size = (image_size - 3) // 2 + 1
    return size - 2 * (num_layers - 1)


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal init for Linear; delta-orthogonal (centre tap) for 3x3 convs, as in CURL/SAC-AE."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
        mid = module.weight.shape[2] // 2
        nn.init.orthogonal_(module.weight[:, :, mid, mid], nn.init.calculate_gain("relu"))


class ConvTrunk(nn.Module):
    """``num_layers`` 3×3 convs with ``num_filters`` channels (first stride 2) and ReLUs.

    Input: (B, C, H, W) uint8 in [0, 255] or float already in [0, 1].
    Output: (B, num_filters * S * S) flat float32 features, S = ``conv_output_size``.

    ``amp_dtype`` (None, or e.g. ``torch.bfloat16``) runs the convs under
    ``torch.autocast`` in that dtype; weights and the returned features stay float32.
    """

    def __init__(self, in_channels: int, num_layers: int = 4, num_filters: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_filters, 3, stride=2), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(num_filters, num_filters, 3, stride=1), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.channels_last = False
        self.amp_dtype: torch.dtype | None = None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float().div_(255.0) if obs.dtype == torch.uint8 else obs
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.net(x).flatten(1)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            h = self.net(x)
        return h.flatten(1).float()


class EncoderHead(nn.Module):
    """Linear -> LayerNorm (-> tanh if ``output_tanh``): flat conv features to ``feature_dim``."""

    def __init__(self, in_features: int, feature_dim: int = 50, output_tanh: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)
        self.output_tanh = output_tanh

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.norm(self.linear(h))
        return torch.tanh(z) if self.output_tanh else z


class PixelEncoder(nn.Module):
    """Conv encoder of CURL: (B, 3k, H, W) frame stacks -> (B, feature_dim) features.

    Args:
        obs_shape: (channels, height, width) of the *cropped* input, e.g. (9, 84, 84).
        feature_dim: output size (50 in CURL).
        num_layers: conv layers, the first with stride 2 (4 in CURL).
        num_filters: channels of every conv layer (32 in CURL).
        output_tanh: apply tanh after LayerNorm. The CURL paper's text says tanh; its
            code used none for the actor and critic, which is the default here.

    ``forward(obs, detach_conv=False)`` accepts uint8 (scaled by 1/255) or float in
    [0, 1]. ``conv`` and ``head`` are public so the agent can share one conv pass
    between heads and tie the actor's conv to the critic's.
    """

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        feature_dim: int = 50,
        num_layers: int = 4,
        num_filters: int = 32,
        output_tanh: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = obs_shape
        if h != w:
            raise ValueError(f"PixelEncoder expects square inputs, got {h}x{w}")
        self.obs_shape = tuple(int(v) for v in obs_shape)
        self.feature_dim = feature_dim
        self.num_layers = num_layers
        self.num_filters = num_filters
        self.output_tanh = output_tanh
        self.conv = ConvTrunk(c, num_layers, num_filters)
        self.conv_dim = num_filters * conv_output_size(h, num_layers) ** 2
        self.head = EncoderHead(self.conv_dim, feature_dim, output_tanh)
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        h = self.conv(obs)
        return self.head(h.detach() if detach_conv else h)

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this encoder (used in exports)."""
        return dict(obs_shape=list(self.obs_shape), feature_dim=self.feature_dim,
                    num_layers=self.num_layers, num_filters=self.num_filters,
                    output_tanh=self.output_tanh)

    def save_pretrained(self, path: str | os.PathLike, source: str = "",
                        extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Write weights + metadata to a ``.safetensors`` file (temp file + rename).

        Metadata (all strings): format, obs_shape (JSON list, the cropped input),
        feature_dim, num_layers, num_filters, output_tanh, normalisation ("uint8/255":
        uint8 pixels divided by 255, or floats already in [0, 1]) and ``source``.
        ``extra_tensors`` (e.g. ``{"curl_head.W": W}``) are stored beside the weights.
        """
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
        meta = {"format": EXPORT_FORMAT, "normalisation": "uint8/255", "source": str(source),
                **{k: json.dumps(v) for k, v in self.config().items()}}
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, "wb") as fh:  # not save_file: the file gets the usual permissions
                fh.write(save(tensors, metadata=meta))
        except OSError as exc:
            raise write_error(path, exc) from None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **expected) -> "PixelEncoder":
        """Load an encoder written by :meth:`save_pretrained` / ``curlrl export``.

        ``expected`` constructor arguments (e.g. ``obs_shape=(9, 84, 84)``) are checked
        against the file's metadata. A missing file, a file that is not a curlrl
        encoder, or one of another shape raises :class:`CheckpointError` (one line).
        """
        meta, tensors = read_export(path)
        try:
            config = {k: json.loads(meta[k]) for k in ("obs_shape", "feature_dim", "num_layers",
                                                     "num_filters", "output_tanh")}
        except (KeyError, ValueError):
            raise CheckpointError(f"{path} lacks the curlrl encoder metadata "
                                  f"(re-export it with curlrl export)") from None
        unknown = set(expected) - set(config)
        if unknown:
            raise TypeError(f"from_pretrained: unknown expected argument(s) {sorted(unknown)}")
        diff = [f"{k} {config[k]} (expected {list(v) if isinstance(v, tuple) else v})"
                for k, v in expected.items() if (list(v) if isinstance(v, tuple) else v) != config[k]]
        if diff:
            raise CheckpointError(f"encoder file {path} has another shape: " + ", ".join(diff))
        try:
            encoder = cls(tuple(config["obs_shape"]), config["feature_dim"], config["num_layers"],
                          config["num_filters"], bool(config["output_tanh"]))
            encoder.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("curl_head.")})
        except (RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"encoder file {path} does not match its metadata ({first})") from None
        return encoder


def read_export(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a curlrl encoder export; CheckpointError if it is not one."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"encoder file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = first_line(exc)
        raise CheckpointError(f"encoder file {path} is corrupt or not a safetensors file ({first})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not a curlrl encoder export (metadata format "
                              f"{meta.get('format')!r}, expected {EXPORT_FORMAT!r})")
    return meta, tensors


class ForeignEncoder(nn.Module):
    """Any torch module that maps frame stacks to features, behind curlrl's encoder protocol,
    so probes and behaviour cloning compare it with curlrl's encoders on the same data, and
    the agent can learn on it (as the trunk of a :class:`ForeignPixelEncoder`).

    The protocol (what ``module`` receives and must return):

    - input: float32 (B, 3k, S, S) in [0, 1], k RGB frames stacked oldest first along the
      channels, centre-cropped to S (``obs_shape = (3k, S, S)``);
    - ``mean``/``std`` (per RGB channel, e.g. ImageNet's) are applied first when given;
    - output: (B, feature_dim) features (any float dtype; returned as float32).

    A single-frame model (an ImageNet ResNet) sees k=1 stacks; for k>1 write a module that
    splits the channels itself. The wrapper freezes nothing: callers decide (``requires_grad_``).
    """

    def __init__(self, module: nn.Module, obs_shape: tuple[int, int, int], feature_dim: int,
                 mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
                 name: str = "") -> None:
        super().__init__()
        if len(obs_shape) != 3 or obs_shape[0] % 3 or obs_shape[1] != obs_shape[2]:
            raise ValueError(f"obs_shape must be (3k, S, S), got {tuple(obs_shape)}")
        self.module, self.obs_shape, self.feature_dim, self.name = module, tuple(obs_shape), int(feature_dim), name
        k = obs_shape[0] // 3
        for key, value in (("mean", mean), ("std", std)):
            t = torch.zeros(0) if value is None else torch.tensor(value, dtype=torch.float32).repeat(k)
            self.register_buffer(key, t.view(-1, 1, 1) if value is not None else t, persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float().div(255.0) if obs.dtype == torch.uint8 else obs.float()
        if self.mean.numel():
            x = x - self.mean
        if self.std.numel():
            x = x / self.std
        out = self.module(x)
        if out.ndim != 2 or out.shape[1] != self.feature_dim:
            raise ValueError(f"{self.name or 'the encoder module'} returned shape {tuple(out.shape)}, "
                             f"expected (batch, {self.feature_dim})")
        return out.float()

    def config(self) -> dict:
        return dict(obs_shape=self.obs_shape, feature_dim=self.feature_dim)


class ForeignPixelEncoder(nn.Module):
    """:class:`PixelEncoder`'s shape around a bring-your-own trunk: a :class:`ForeignEncoder`
    as ``conv``, then curlrl's Linear+LayerNorm ``head`` on its features.

    The agent uses it in place of a :class:`PixelEncoder` (``conv``, ``conv_dim``, ``head``,
    ``obs_shape``, ``feature_dim`` and ``forward(obs, detach_conv=False)`` mean the same),
    so SAC, CURL and the actor's own head sit on the trunk's features. The trunk keeps
    the weights its factory gave it; only ``head`` is initialised here (orthogonal).

    The trunk always runs in eval mode, whether it is frozen or fine-tuned: BatchNorm
    uses (and keeps) its running statistics and dropout is off, so a feature depends on
    its own input only, as SAC's targets and CURL's keys assume. ``train()`` leaves it so.
    """

    def __init__(self, trunk: ForeignEncoder, feature_dim: int = 50, output_tanh: bool = False) -> None:
        super().__init__()
        self.obs_shape = tuple(int(v) for v in trunk.obs_shape)
        self.feature_dim = feature_dim
        self.output_tanh = output_tanh
        self.conv = trunk
        self.conv_dim = trunk.feature_dim
        self.head = EncoderHead(self.conv_dim, feature_dim, output_tanh)
        self.head.apply(orthogonal_init)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ForeignPixelEncoder":
        super().train(mode)
        self.conv.eval()  # always: see the class docstring
        return self

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        h = self.conv(obs)
        return self.head(h.detach() if detach_conv else h)

    def config(self) -> dict:
        """The shape of the input and of the features (there is no curlrl conv stack to describe)."""
        return dict(obs_shape=list(self.obs_shape), feature_dim=self.feature_dim, output_tanh=self.output_tanh)
