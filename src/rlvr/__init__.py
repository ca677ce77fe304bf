"""rlvr: reinforcement learning with verifiable rewards for LLMs, on PyTorch Lightning."""

__version__ = "0.1.0"
