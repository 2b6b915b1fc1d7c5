"""Pick a headless OpenGL backend for MuJoCo before dm_control is imported.

A user's ``MUJOCO_GL`` always wins. Otherwise EGL then OSMesa are each tried in a short
subprocess (a backend cannot be switched once loaded in a process); the first that
renders a frame is exported as ``MUJOCO_GL`` so child processes inherit the choice.
"""
from __future__ import annotations

import os
import subprocess
import sys

from curlrl.errors import EnvError

INSTALL_HINT = ("no working headless OpenGL for MuJoCo: install EGL "
                "('apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri') or OSMesa "
                "('apt-get install libosmesa6'), or set MUJOCO_GL to a backend that works")

_PROBE = ("import mujoco\n"
          "ctx = mujoco.GLContext(16, 16)\n"
          "ctx.make_current()\n"
          "ctx.free()\n")


def _backend_works(backend: str) -> bool:
    env = dict(os.environ, MUJOCO_GL=backend)
    env.pop("PYOPENGL_PLATFORM", None)  # dm_control/mujoco derive it from MUJOCO_GL
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def select_gl_backend(candidates: tuple[str, ...] = ("egl", "osmesa")) -> str:
    """Return the MuJoCo GL backend to use, setting ``MUJOCO_GL`` if it was unset.

    Raises :class:`EnvError` with the packages to install when no candidate works.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    for backend in candidates:
        if _backend_works(backend):
            os.environ["MUJOCO_GL"] = backend
            return backend
    raise EnvError(INSTALL_HINT)
