"""Threads: as many as the cores this process may use, or $STKC_THREADS; idle threads sleep."""

import os
import subprocess
import sys

import pytest

from stkcodec import runtime
from stkcodec.errors import BadInputError


def test_thread_count_follows_affinity_or_the_environment(monkeypatch):
    monkeypatch.delenv(runtime.ENV, raising=False)
    assert runtime.thread_count() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(runtime.ENV, "3")
    assert runtime.thread_count() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(runtime.ENV, bad)
        with pytest.raises(BadInputError, match=runtime.ENV):
            runtime.thread_count()


@pytest.mark.slow
def test_the_cli_sets_threads_before_torch_starts():
    code = ("import os, sys; from stkcodec.cli import main\n"
            "sys.argv = ['stkc', 'decompress', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import torch\n"
            "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, runtime.ENV: "1"}, capture_output=True, text=True,
                         check=True).stdout.split()[-2:]
    assert out == ["1", "PASSIVE"]


@pytest.mark.slow
def test_importing_the_library_leaves_the_host_program_s_threads_alone():
    code = "import os, stkcodec, stkcodec.codec; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "unset"
