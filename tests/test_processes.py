"""Children die with their parent: DataLoader workers of a run killed with kill -9 are not left behind."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from test_datamodule import datamodule

from tmaps.processes import die_with_parent

PARENT = textwrap.dedent(
    """
    import json, os, time
    import torch
    from torch.utils.data import DataLoader
    from tmaps.processes import die_with_parent

    class Pids(torch.utils.data.Dataset):
        def __len__(self):
            return 4
        def __getitem__(self, index):
            return os.getpid()

    loader = DataLoader(Pids(), batch_size=1, num_workers=2, persistent_workers=True, worker_init_fn=die_with_parent)
    print(json.dumps(sorted({int(pid) for batch in loader for pid in batch})), flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_dataloader_workers_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers = json.loads(parent.stdout.readline())
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # The kernel kills them at once; PyTorch's own watchdog would take up to 5 s, and was seen to hang.
        deadline = time.monotonic() + 1
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def test_the_datamodule_gives_its_workers_the_parent_death_signal(synth_corpus_en, tmp_path):
    module = datamodule(synth_corpus_en, tmp_path)
    module.prepare_data()
    loader = module.loader("train")
    assert loader.worker_init_fn is die_with_parent
