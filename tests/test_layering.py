"""The import rules of DESIGN.md, checked in fresh interpreters."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
ABOVE_THE_CORE = ('curlrl.agents', 'curlrl.envs', 'curlrl.jobs', 'curlrl.cli')
"""


def _run(code: str) -> None:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_core_imports_without_gymnasium_dm_control_or_agents():
    _run(BLOCK.format(blocked={"gymnasium", "dm_control", "mujoco"}) + """
import curlrl
from curlrl import PixelEncoder, CurlHead, random_crop, center_crop, ema_update, ReplayBuffer
from curlrl import Objective, ObjectiveConfig, build_objective
import curlrl.datasets
assert not any(m.startswith(ABOVE_THE_CORE) for m in sys.modules), sorted(sys.modules)
""")


def test_the_dataset_format_is_pure_numpy():
    _run(BLOCK.format(blocked={"torch", "gymnasium", "dm_control", "mujoco"}) + """
from curlrl.datasets import load_dataset, save_episode, split_episodes, Episodes
from curlrl.readers import read_episodes, detect_format, fit_frames
assert not any(m.startswith(ABOVE_THE_CORE) for m in sys.modules), sorted(sys.modules)
""")


def test_agents_import_no_envs_and_envs_import_no_torch():
    _run(BLOCK.format(blocked={"gymnasium", "dm_control", "mujoco"}) + """
from curlrl.agents import CurlSacAgent
""")
    _run(BLOCK.format(blocked={"torch"}) + """
import curlrl.envs
""")


def test_options_module_is_pure_data_for_the_core():
    _run(BLOCK.format(blocked={"torch", "numpy", "yaml", "gymnasium", "dm_control"}) + """
import curlrl.options
assert not any(m.startswith(('curlrl.agents', 'curlrl.jobs')) for m in sys.modules)
""")


def test_the_atari_agent_imports_no_env_code_and_its_replay_no_torch():
    _run(BLOCK.format(blocked={"gymnasium", "ale_py", "dm_control", "mujoco", "cv2"}) + """
import curlrl.agents.der
assert not any(m.startswith(('curlrl.envs', 'curlrl.jobs')) for m in sys.modules)
""")
    _run(BLOCK.format(blocked={"torch", "gymnasium", "ale_py"}) + """
import curlrl.per
assert not any(m.startswith(('curlrl.agents', 'curlrl.envs', 'curlrl.jobs')) for m in sys.modules)
""")


def test_the_atari_env_imports_no_torch():
    pytest.importorskip("ale_py", reason="pip install -e '.[atari]'")
    _run(BLOCK.format(blocked={"torch"}) + """
from curlrl.envs.atari import make_atari_env
make_atari_env('atari-pong', seed=0, training=True).reset()
""")


def test_wheel_only_installs_the_curlrl_package(tmp_path):
    import pathlib
    import zipfile
    root = pathlib.Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    wheel = next(tmp_path.glob("curlrl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"curlrl"}
    for must in ("curlrl/agents/curl_sac.py", "curlrl/envs/dmc.py", "curlrl/configs/cartpole-swingup.yaml"):
        assert must in names
    # install the real wheel into a folder and import from it, away from the source tree
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                          str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    code = ("import sys, importlib.util; sys.path.insert(0, %r)\n"
            "import curlrl, curlrl.agents, curlrl.jobs.config\n"
            "assert curlrl.__file__.startswith(%r), curlrl.__file__\n"
            "assert curlrl.agents.__file__.startswith(%r)\n"
            "assert importlib.util.find_spec('agents') is None and importlib.util.find_spec('envs') is None\n"
            "assert curlrl.jobs.config.task_config('cartpole-swingup')['action_repeat'] == 8\n") % (
                str(target), str(target), str(target))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def _curlrl_imports() -> dict[str, set[str]]:
    """Module -> the curlrl modules it imports anywhere in its text (lazy imports included:
    an import inside a function that closes a circle is still a circle)."""
    root = Path(__file__).resolve().parents[1] / "curlrl"
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(parts + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                candidates = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps.update(c for c in candidates if c in files and c != name and not name.startswith(c + "."))
        graph[name] = deps
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_curlrl():
    # e.g. rundir (paths, files, checkpoints) builds no agent; a run's result knows no suite;
    # the episodes a training run evaluates know no evaluation job
    graph = _curlrl_imports()
    assert "curlrl.jobs.train" in graph["curlrl.jobs.evaluate"]  # the walker sees lazy imports
    assert _circles(graph) == []
