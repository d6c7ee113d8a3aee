"""The farm fixtures of tests/sched and tests/agent, for other suites.

tests/agent/conftest.py loads tests/sched/conftest.py (the farm: PostgreSQL,
Redis, pf-files, scheduler replicas) and adds pf-agent processes. A suite
that needs both calls load(globals(), "its name") from its conftest.py: the
two modules are loaded once as plain modules and every fixture they define
is re-exported into the caller's namespace (where the caller has no
fixture of that name already)."""

import importlib.util
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))


def _load(name, path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load(namespace, suite):
    """Returns (agent conftest module, sched conftest module)."""
    agent_mod = _load("pf_agent_conftest", os.path.join(TESTS, "agent", "conftest.py"))
    sched = agent_mod.sched
    if sched is None:
        raise RuntimeError("tests/sched/conftest.py is missing: %s need its farm fixtures" % suite)
    for name, value in list(vars(sched).items()) + list(vars(agent_mod).items()):
        if hasattr(value, "_pytestfixturefunction") and name not in namespace:
            namespace[name] = value
    return agent_mod, sched
