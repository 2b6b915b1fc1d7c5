"""Orchestration: the jobs that wire core, agents and envs together.

Each job is one module (train, evaluate, pretrain, probe, collect, export, bench, report);
they share the config schema (``config``), the run-directory module (``rundir``) and host
concerns (``host``). Nothing in the core, ``curlrl.agents`` or ``curlrl.envs`` imports from here.
"""
