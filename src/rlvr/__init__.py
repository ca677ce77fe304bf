"""rlvr: reinforcement learning with verifiable rewards for LLMs, on PyTorch Lightning."""

import os

# GNU OpenMP threads spin while waiting for work. Next to anything else busy (verifier threads, sandbox
# processes, a second job) that made small CPU ops ~7x slower on our 2-core machines; passive waiting
# costs nothing measurable when the machine is idle. It must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
