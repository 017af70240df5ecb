"""A second process replaying the same training step loads its kernels from the disk cache."""
import json
import os
import pathlib
import subprocess
import sys

SCRIPT = r"""
import json
import fusegrad as fg, fusegrad.nnlib as nn, fusegrad.optimlib as optim
from fusegrad.backends.numba_cpu import STATS
fg.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x, y = fg.randn(4, 6), fg.randint(0, 3, (4,))
losses = []
for _ in range(3):
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(json.dumps({"compiled": STATS.kernels_compiled, "loaded": STATS.kernels_loaded,
                  "damaged": STATS.damaged_entries, "losses": losses}))
"""


def _run(cache: pathlib.Path) -> dict:
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(cache), FUSEGRAD_BACKEND="numba_cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_instead_of_compiling(tmp_path):
    first = _run(tmp_path)
    assert first["compiled"] > 0
    second = _run(tmp_path)
    assert second["compiled"] == 0
    assert second["loaded"] == first["compiled"] + first["loaded"]
    assert second["losses"] == first["losses"]


def test_corrupted_cache_files_are_rebuilt(tmp_path):
    first = _run(tmp_path)
    damaged = 0
    for f in tmp_path.rglob("*"):
        if f.suffix in (".nbi", ".nbc"):
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])  # truncated
            damaged += 1
    assert damaged
    third = _run(tmp_path)
    assert third["losses"] == first["losses"]
    assert third["compiled"] > 0
