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
          "model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>')\n"
          "renderer = mujoco.Renderer(model, 8, 8)\n"
          "renderer.update_scene(mujoco.MjData(model))\n"
          "assert renderer.render().shape == (8, 8, 3)\n")


def _backend_works(backend: str) -> bool:
    env = dict(os.environ, MUJOCO_GL=backend)
    env.pop("PYOPENGL_PLATFORM", None)  # dm_control/mujoco derive it from MUJOCO_GL
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


_VALID = ("egl", "osmesa", "glfw")
_verified: set[str] = set()


def select_gl_backend(candidates: tuple[str, ...] = ("egl", "osmesa")) -> str:
    """Return the MuJoCo GL backend to use, setting ``MUJOCO_GL`` if it was unset.

    A user's ``MUJOCO_GL`` is used as given, but checked once so that a backend that
    cannot render (e.g. ``glfw`` without a display) fails with one clear line.
    Raises :class:`EnvError` with the packages to install when nothing works.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        if chosen in _verified:
            return chosen
        if chosen not in _VALID:
            raise EnvError(f"MUJOCO_GL={chosen!r} is not a MuJoCo backend; use one of {', '.join(_VALID)}")
        if not _backend_works(chosen):
            raise EnvError(f"MUJOCO_GL={chosen} cannot render on this machine; unset it to let curlrl "
                           f"choose, or {INSTALL_HINT.split(': ', 1)[1]}")
        _verified.add(chosen)
        return chosen
    for backend in candidates:
        if _backend_works(backend):
            os.environ["MUJOCO_GL"] = backend
            _verified.add(backend)
            return backend
    raise EnvError(INSTALL_HINT)
