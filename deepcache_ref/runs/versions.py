"""What a record says about the code and the machine that made it."""

import datetime
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).resolve().parents[2]  # the checkout this package runs from, if any


def versions():
    from .. import __version__

    commit = ""
    if (SOURCE / ".git").exists():  # installed from a wheel there is no commit to name
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE, capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return {"deepcache_ref": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "git_commit": commit or None, "host": platform.node(),
            "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
