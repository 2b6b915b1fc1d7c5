"""In CI every optional test dependency must be there: the tests that use one skip where it is
missing (a user's machine), and a skip in CI would hide that they never ran."""
import importlib.util
import os

import pytest

# module -> the extra of pyproject.toml that installs it (scripts/setup.sh installs test, sb3 and atari)
EXTRAS = {"stable_baselines3": "sb3", "pytorch_metric_learning": "test", "h5py": "test", "ale_py": "atari",
          "cv2": "atari"}


@pytest.mark.skipif(os.environ.get("CI", "").lower() not in ("1", "true"), reason="CI only (CI=true)")
@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_ci_has_every_optional_test_dependency(module):
    assert importlib.util.find_spec(module) is not None, \
        f"{module} is missing: pip install -e '.[{EXTRAS[module]}]' (scripts/setup.sh does)"
