"""One line describing the machine, printed at the top of every benchmark table."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    import torch
    import transformers

    cpu = platform.processor() or "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU: {cpu}; cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; GPU: {gpu}; "
            f"torch {torch.__version__}; transformers {transformers.__version__}; Python {platform.python_version()}")
