"""Math: GSM8K, MATH-500 and a seeded word-problem generator, checked by math-verify."""

from rlvr.domains.math.task import MathTask

__all__ = ["MathTask"]
