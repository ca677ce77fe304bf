"""Benchmark evaluation: generation benchmarks scored by the task verifiers, multiple choice by
log-likelihood, pass@k, error analysis, run comparison and reports. See :mod:`rlvr.eval.benchmarks`."""
