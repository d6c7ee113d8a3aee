"""Fixtures for the farmctl tests: farmctl as a real process against real
PostgreSQL, Redis, pf-files, pf-scheduler replicas and pf-agent processes.

Nothing is duplicated here: the farm (`infra`, `farm_factory`, `Farm`) comes
from tests/sched/conftest.py and the pf-agent processes (`agent_factory`,
`sim_log_lines`) from tests/agent/conftest.py, which loads the former; both
are loaded as plain modules and their fixtures re-exported.

Added here:
  farmctl(*args, farm=None, schedulers=None, env=None, cwd=None, check=None)
      -> Result(rc, out, err, json): runs BUILD/tools/farmctl/farmctl with
      --scheduler (every live replica of `farm`, or `schedulers`) and --files
      set, HOME and PRINTFARM_* cleared so no user config leaks in.
  two_replicas (module): a Farm with two scheduler replicas.
  SAMPLES: samples/gcode/ of the repository.
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.environ.get("PF_SOURCE_DIR") or os.path.dirname(TESTS)
BUILD = os.path.abspath(os.environ.get("PF_BUILD_DIR") or os.path.join(REPO, "build"))
FARMCTL = os.environ.get("PF_FARMCTL_BIN") or os.path.join(BUILD, "tools", "farmctl", "farmctl")
SAMPLES = os.path.join(REPO, "samples", "gcode")
FARMCTL_TIMEOUT = 120


sys.path.insert(0, TESTS)
import farm_fixtures  # noqa: E402

agent_mod, sched = farm_fixtures.load(globals(), "farmctl tests")

pb = sched.pb
wait_until = sched.wait_until
unique = sched.unique
sim_log_lines = agent_mod.sim_log_lines


class Result:
    def __init__(self, argv, proc):
        self.argv = argv
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def json(self):
        return json.loads(self.out)

    def lines_json(self):
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def __repr__(self):
        return "farmctl %s -> %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(self.argv), self.rc, self.out, self.err)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRINTFARM_")}
    env["HOME"] = "/nonexistent-farmctl-test-home"
    env.pop("XDG_CONFIG_HOME", None)
    env.update(extra or {})
    return env


def run_farmctl(*args, farm=None, schedulers=None, files=None, env=None, cwd=None, check=None,
                timeout=FARMCTL_TIMEOUT):
    if not os.access(FARMCTL, os.X_OK):
        pytest.fail("farmctl not built (%s)" % FARMCTL, pytrace=False)
    argv = [FARMCTL]
    if schedulers is None and farm is not None:
        schedulers = [s.address for s in farm.alive()]
    if schedulers:
        argv += ["--scheduler", ",".join(schedulers)]
    if files is None and farm is not None:
        files = farm.files.address
    if files:
        argv += ["--files", files]
    argv += [str(a) for a in args]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=clean_env(env), cwd=cwd or HERE, timeout=timeout)
    r = Result(argv[1:], proc)
    if check is not None:
        assert r.rc == check, r
    return r


@pytest.fixture(scope="module")
def two_replicas(infra, tmp_path_factory):
    f = sched.Farm(infra, str(tmp_path_factory.mktemp("farm2")), replicas=2,
                   extra_args=["--lost-grace", "5s"])
    yield f
    f.stop()
