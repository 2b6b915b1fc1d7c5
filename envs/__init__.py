"""DeepMind Control -> gymnasium pixel environments. Imports no torch."""
from curlrl.envs.dmc import DMCPixelEnv, make_env, parse_task
from curlrl.envs.rendering import select_gl_backend

__all__ = ["DMCPixelEnv", "make_env", "parse_task", "select_gl_backend"]
