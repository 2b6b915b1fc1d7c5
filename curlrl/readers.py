"""Pixel episodes from outside curlrl: video files, image-sequence folders, V-D4RL files.

Core (numpy, imageio, Pillow; ``h5py`` only for V-D4RL's ``.hdf5`` shards, imported when one
is read). Each reader returns a list of :class:`RawEpisode`: frames ``(T+1, H, W, 3)`` uint8
and, where the source has them, ``action`` ``(T, A)`` and ``reward`` ``(T,)`` (the action taken
after frame t and the reward received for it). True physics state is never in outside data.

Formats (:data:`FORMATS`), detected from the folder by :func:`detect_format` or named:

    curlrl   curlrl's own episodes (``curlrl collect``): read by :mod:`curlrl.datasets`
    videos   one episode per video file (mp4, avi, mov, mkv, webm, gif), frames in order
    frames   one episode per sub-folder of images (png, jpg, jpeg, bmp), frames in name order
             (natural order: frame_2 before frame_10)
    vd4rl    V-D4RL episodes: DreamerV2-style ``*.npz`` (``image`` (T+1, H, W, 3), ``action``,
             ``reward`` with a dummy first entry; the 64 px datasets) or DrQ+BC-style ``*.hdf5``
             shards (``observation`` (N, 3, H, W), ``action``, ``reward``, ``step_type`` with
             0 = first step of an episode; the 84 px datasets)

Frames are brought to the encoder's input contract by one rule, :data:`RESIZE_RULE`: a
non-square frame is centre-cropped to a square (the shorter side), then resized to
``image_size`` x ``image_size`` (Pillow, bilinear with antialiasing) unless it already has
that size; ``image_size`` 0 keeps square frames as they are (all episodes must then agree).
Videos are decoded with imageio's ffmpeg plugin (``imageio-ffmpeg``, already curlrl's video
writer: it brings its own ffmpeg binary, so no system codec or extra package is needed).
"""
from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curlrl.errors import DatasetError, first_line

FORMATS = ("curlrl", "videos", "frames", "vd4rl")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
RESIZE_RULE = "centre-crop to a square, then resize to image_size (Pillow bilinear, antialiased)"


@dataclass
class RawEpisode:
    """One episode as read: ``frames`` (T+1, H, W, 3) uint8; ``action`` (T, A) / ``reward``
    (T,) float32 or None when the source has none; ``name`` where it came from."""

    name: str
    frames: np.ndarray
    action: np.ndarray | None = None
    reward: np.ndarray | None = None


def _visible(paths) -> list[Path]:
    return [p for p in paths if not p.name.startswith(".")]


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _listed(folder: Path, keep) -> list[Path]:
    """The visible entries of ``folder`` for which ``keep(path)`` holds, in natural name order."""
    return sorted((p for p in _visible(folder.iterdir()) if keep(p)), key=_natural_key)


def detect_format(folder: str | Path) -> str:
    """The format of a dataset folder (see :data:`FORMATS`); DatasetError naming what it holds
    when no format fits."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset directory {folder} does not exist")
    files = _visible(folder.iterdir())
    npz = [p for p in files if p.suffix == ".npz"]
    if (folder / "manifest.json").is_file() or any(p.name.startswith("episode_") for p in npz):
        return "curlrl"
    if any(p.suffix == ".hdf5" for p in files):
        return "vd4rl"
    if npz:
        keys = _npz_keys(npz[0])
        if "image" in keys:
            return "vd4rl"
        if "pixels" in keys:
            return "curlrl"
        raise DatasetError(f"{npz[0]} is neither a curlrl episode (pixels) nor a V-D4RL one (image); "
                           f"it holds {', '.join(keys) or 'nothing'}")
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in files):
        return "videos"
    if any(p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()) for p in files):
        return "frames"
    seen = sorted({p.suffix or ("folder" if p.is_dir() else p.name) for p in files})
    raise DatasetError(f"dataset directory {folder} holds no episodes of a known format "
                       f"({', '.join(FORMATS)}); found {', '.join(seen) if seen else 'nothing'}")


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return list(data.files)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable .npz file ({first_line(exc)})") from None


# -- the readers --------------------------------------------------------------------------
def read_videos(folder: Path) -> list[RawEpisode]:
    """One episode per video file, in name order."""
    import imageio.v2 as imageio

    paths = _listed(folder, lambda p: p.suffix.lower() in VIDEO_SUFFIXES)
    if not paths:
        raise DatasetError(f"dataset directory {folder} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    episodes = []
    for path in paths:
        try:
            reader = imageio.get_reader(str(path), format="GIF" if path.suffix.lower() == ".gif" else "ffmpeg")
            with reader:
                frames = [np.asarray(f) for f in reader]
        except Exception as exc:  # imageio/ffmpeg raise many types for a file that is not a video
            raise DatasetError(f"{path} is not a readable video ({first_line(exc)})") from None
        episodes.append(RawEpisode(path.name, _rgb(np.stack(frames) if frames else np.zeros((0,)), path)))
    return episodes


def read_frames(folder: Path) -> list[RawEpisode]:
    """One episode per sub-folder of images; frames in natural name order."""
    import imageio.v2 as imageio

    dirs = _listed(folder, Path.is_dir)
    episodes = []
    for sub in dirs:
        images = _listed(sub, lambda p: p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"episode folder {sub} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = []
        for path in images:
            try:
                frames.append(_rgb(np.asarray(imageio.imread(path))[None], path)[0])
            except DatasetError:
                raise
            except Exception as exc:
                raise DatasetError(f"{path} is not a readable image ({first_line(exc)})") from None
            if frames[-1].shape != frames[0].shape:
                raise DatasetError(f"episode folder {sub} mixes image sizes: {images[0].name} is "
                                   f"{_hw(frames[0])}, {path.name} is {_hw(frames[-1])}")
        episodes.append(RawEpisode(sub.name, np.stack(frames)))
    if not episodes:
        raise DatasetError(f"dataset directory {folder} holds no episode folders of images")
    return episodes


def read_vd4rl(folder: Path) -> list[RawEpisode]:
    """V-D4RL's ``*.npz`` episodes or ``*.hdf5`` shards (see the module docstring)."""
    npz = _listed(folder, lambda p: p.suffix == ".npz")
    hdf5 = _listed(folder, lambda p: p.suffix == ".hdf5")
    episodes = [_vd4rl_npz(p) for p in npz]
    for path in hdf5:
        episodes += _vd4rl_hdf5(path)
    if not episodes:
        raise DatasetError(f"dataset directory {folder} holds no V-D4RL files (*.npz, *.hdf5)")
    return episodes


def _vd4rl_npz(path: Path) -> RawEpisode:
    need = ("image", "action", "reward")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in need if k not in data.files]
            if missing:
                raise DatasetError(f"V-D4RL episode {path} lacks {', '.join(missing)} "
                                   f"(has {', '.join(data.files) or 'nothing'})")
            image, action, reward = (np.asarray(data[k]) for k in need)
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise DatasetError(f"V-D4RL episode {path} is corrupt or truncated ({first_line(exc)})") from None
    if image.ndim != 4 or image.shape[-1] != 3:
        raise DatasetError(f"V-D4RL episode {path} has image {image.shape}, expected (T+1, H, W, 3)")
    n = len(image)
    if action.ndim != 2 or len(action) != n or reward.shape[:1] != (n,):
        raise DatasetError(f"V-D4RL episode {path} has action {action.shape} / reward {reward.shape} for "
                           f"{n} images, expected ({n}, A) / ({n},) (the first entry is the reset's)")
    # entry 0 belongs to the reset (no action taken yet): action t+1 led from image t to t+1
    return RawEpisode(path.name, _rgb(image, path), action[1:].astype(np.float32),
                      reward[1:].reshape(-1).astype(np.float32))


def _vd4rl_hdf5(path: Path) -> list[RawEpisode]:
    try:
        import h5py
    except ImportError:
        raise DatasetError(f"reading {path} needs h5py (pip install h5py, or curlrl's 'vd4rl' extra)") from None
    need = ("observation", "action", "reward", "step_type")
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in need if k not in fh]
            if missing:
                raise DatasetError(f"V-D4RL shard {path} lacks {', '.join(missing)} (has {', '.join(fh) or 'nothing'})")
            obs, action, reward, step_type = (np.asarray(fh[k][:]) for k in need)
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"V-D4RL shard {path} is corrupt or not HDF5 ({first_line(exc)})") from None
    n = len(obs)
    if obs.ndim != 4 or obs.shape[1] != 3:
        raise DatasetError(f"V-D4RL shard {path} has observation {obs.shape}, expected (N, 3, H, W)")
    if len(action) != n or len(reward) != n or len(step_type) != n:
        raise DatasetError(f"V-D4RL shard {path} has {n} observations but {len(action)} actions, "
                           f"{len(reward)} rewards and {len(step_type)} step types")
    starts = np.flatnonzero(step_type == 0)
    if n == 0 or len(starts) == 0 or starts[0] != 0:
        raise DatasetError(f"V-D4RL shard {path} does not begin with an episode's first step (step_type 0)")
    ends = np.append(starts[1:], n)
    return [RawEpisode(f"{path.name}[{i}]", _rgb(obs[s:e].transpose(0, 2, 3, 1), path),
                       action[s + 1:e].astype(np.float32), reward[s + 1:e].reshape(-1).astype(np.float32))
            for i, (s, e) in enumerate(zip(starts, ends))]


READERS = {"videos": read_videos, "frames": read_frames, "vd4rl": read_vd4rl}


def _rgb(frames: np.ndarray, path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 from RGB, RGBA or grey frames; DatasetError for anything else."""
    frames = np.asarray(frames)
    if frames.ndim == 3:  # grey (T, H, W)
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or len(frames) == 0:
        raise DatasetError(f"{path} holds no RGB frames (array of shape {frames.shape})")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.dtype != np.uint8:
        raise DatasetError(f"{path} holds {frames.dtype} frames; expected 8-bit images (uint8)")
    return np.ascontiguousarray(frames[..., :3])


def _hw(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def fit_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, 3, S, S) uint8 by :data:`RESIZE_RULE` (S = ``image_size``, or the
    frames' own size when 0 and they are square)."""
    t, h, w, _ = frames.shape
    if h != w:
        if not image_size:
            raise DatasetError(f"frames of {w}x{h} are not square: give an image size to crop and resize them to")
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frames = frames[:, top:top + side, left:left + side]
        h = w = side
    if image_size and h != image_size:
        from PIL import Image

        frames = np.stack([np.asarray(Image.fromarray(f).resize((image_size, image_size), Image.BILINEAR))
                           for f in frames])
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))


def read_episodes(folder: str | Path, fmt: str, image_size: int = 0) -> list[RawEpisode]:
    """Every episode of an outside dataset, frames fitted (``frames`` become (T+1, 3, S, S));
    DatasetError for any problem, naming the file."""
    if fmt not in READERS:
        raise DatasetError(f"dataset format {fmt!r} is not one of {', '.join(READERS)}")
    if image_size < 0:
        raise DatasetError(f"image size must be >= 0, got {image_size}")
    episodes = READERS[fmt](Path(folder))
    fitted = []
    for ep in episodes:
        if len(ep.frames) < 2:
            raise DatasetError(f"episode {ep.name} in {folder} has {len(ep.frames)} frame(s); at least 2 are needed")
        fitted.append(RawEpisode(ep.name, fit_frames(ep.frames, image_size), ep.action, ep.reward))
    sizes = {e.frames.shape[-1] for e in fitted}
    if len(sizes) > 1:
        first = {e.frames.shape[-1]: e.name for e in fitted}
        listed = ", ".join(f"{s}x{s} ({first[s]})" for s in sorted(sizes))
        raise DatasetError(f"dataset {folder} mixes frame sizes: {listed}; give an image size to resize them to")
    return fitted
