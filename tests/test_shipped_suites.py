"""Every suite file shipped in configs/suites plans: each run's config resolves (and so passes
every check) before a bench would start anything."""
from pathlib import Path

import pytest

from curlrl.jobs.bench.suite import load_suite, plan

SUITES = sorted((Path(__file__).resolve().parents[1] / "configs" / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_a_shipped_suite_plans_every_run(path, tmp_path):
    suite = load_suite(str(path))
    specs = plan(suite, tmp_path / "bench")
    assert len(specs) == len(suite.tasks) * len(suite.seeds) * max(1, len(suite.variants))
    assert all(s.state == "new" for s in specs)
    assert not any(tmp_path.iterdir())  # planning writes nothing


def test_the_atari_suites_cover_what_they_say():
    from curlrl.envs.atari import ATARI_100K_GAMES

    full = load_suite(str(SUITES[0].parent / "atari100k.yaml"))
    assert sorted(full.tasks) == sorted(f"atari-{g}" for g in ATARI_100K_GAMES)
    assert full.env_steps == 100_000 and len(full.seeds) == 5 and set(full.variants) == {"curl", "der"}
