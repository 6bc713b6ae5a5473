"""pyproject's torch and torchvision floors cover the newest API battui calls.

A table maps each API battui uses that is newer than torch 2.0 to the first release that has
it; the test finds each in battui/ (a row whose API is no longer used fails, so the table
follows the code) and checks that pyproject's floor is at least the newest of them, and that
the torchvision floor is the release paired with that torch. Why this and not a CI job that
installs the floor versions and runs the suite: that job downloads about 2 GB of wheels and
runs the ~6 minute suite a second time, which 2 cores and a few minutes do not hold; a new
API call still needs its row added here by hand.
"""

from __future__ import annotations

import re

from tests.support import ROOT

# (regex over battui/*.py, package, first version with it, what it is)
NEWER_APIS = [
    (r"is_autocast_enabled\(\s*[\w.]+", "torch", (2, 4), "torch.is_autocast_enabled(device_type)"),
    (r"init_process_group\(", "torch", (2, 3), "init_process_group(device_id=...) in engine/distributed.py"),
    (r"mmap=", "torch", (2, 1), "torch.load(mmap=...)"),
    (r"torch\.compile\(", "torch", (2, 0), "torch.compile"),
]
DEVICE_ID = re.compile(r"device_id")  # distributed.py passes it through kwargs
TORCHVISION_FOR = {(2, 1): (0, 16), (2, 2): (0, 17), (2, 3): (0, 18), (2, 4): (0, 19), (2, 5): (0, 20),
                   (2, 6): (0, 21)}


def floor(package: str) -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{package}>=([0-9.]+)"', text)
    assert match, f"pyproject has no {package}>= floor"
    return tuple(int(p) for p in match.group(1).split("."))


def test_torch_and_torchvision_floors_cover_the_apis_used():
    sources = {path: path.read_text() for path in (ROOT / "battui").rglob("*.py")}
    needed = (2, 0)
    for pattern, package, version, what in NEWER_APIS:
        users = [p for p, text in sources.items() if re.search(pattern, text)]
        assert users, f"{what} is no longer used: drop its row"
        if "init_process_group" in pattern:
            assert any(DEVICE_ID.search(sources[p]) for p in users), "init_process_group without device_id: drop it"
        assert floor(package) >= version, f"{what} needs {package}>={'.'.join(map(str, version))}"
        needed = max(needed, version)
    assert floor("torch")[:2] == needed, f"torch floor {floor('torch')} above the newest API used {needed}"
    assert floor("torchvision")[:2] == TORCHVISION_FOR[needed], "torchvision's floor is not torch's pair"
