"""The import rules of DESIGN.md, checked in fresh interpreters."""
import subprocess
import sys

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
