"""The OpenMP wait policy is set on import, before torch or faiss starts its runtime."""

import os
import subprocess
import sys

SCRIPT = (
    "import karyosearch, os, sys; "
    "print(os.environ['OMP_WAIT_POLICY']); "
    "print('torch' in sys.modules, 'faiss' in sys.modules)"
)


def run(env_policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


def test_passive_by_default_and_before_the_runtimes_load():
    policy, loaded = run(None)[:2]
    assert policy == "PASSIVE"
    assert loaded == "False False"  # set while neither OpenMP runtime has started


def test_an_explicit_policy_wins():
    assert run("ACTIVE")[0] == "ACTIVE"
