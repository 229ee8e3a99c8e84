"""Library-wide settings.

``channels_last`` chooses the memory layout of 4-D inputs fed to the model (values
are the same either way; a model that cannot take the layout falls back silently).

``memory_budget`` bounds the memory that one chunk of expanded rows (integration
steps, noise samples, baseline samples) may take. ``None`` means automatic: a
fraction of the memory currently available on the device, capped on CPU so that
attributions stay light on shared machines. An ``int`` is a number of bytes; a
``float`` in (0, 1] is a fraction of the available memory.
"""

from __future__ import annotations

import os

import torch

memory_budget: int | float | None = None

#: feed 4-D inputs to the model in channels-last layout: None = automatically (float32
#: on CPU, where convolutions run faster so), True / False to force it
channels_last: bool | None = None

#: fraction of available memory used when ``memory_budget`` is None
AUTO_FRACTION = 0.1
#: cap, in bytes, of the automatic budget on CPU: beyond a few hundred MB per chunk,
#: CPU kernels run no faster (they fall out of cache), so smaller chunks cost nothing
AUTO_CPU_CAP = 256 << 20


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def resolve_memory_budget(device: torch.device | str = "cpu") -> int:
    """The memory budget in bytes for work on ``device``."""
    device = torch.device(device)
    budget = memory_budget
    if budget is None:
        auto = int(AUTO_FRACTION * _available_bytes(device))
        return auto if device.type == "cuda" else min(auto, AUTO_CPU_CAP)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(
            "torchexplain.config.memory_budget must be None, a number of bytes (int) "
            f"or a fraction in (0, 1] (float); got {budget!r}"
        )
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(
                f"torchexplain.config.memory_budget as a float must lie in (0, 1]; got {budget}"
            )
        return int(budget * _available_bytes(device))
    if budget <= 0:
        raise ValueError(f"torchexplain.config.memory_budget must be positive; got {budget}")
    return int(budget)
