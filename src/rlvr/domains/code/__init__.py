"""Python function writing: HumanEval, MBPP and a seeded generator, checked by tests in the sandbox."""

from rlvr.domains.code.task import CodeTask

__all__ = ["CodeTask"]
