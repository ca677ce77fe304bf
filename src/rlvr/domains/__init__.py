"""Domains: one folder each (task, generator, verifier, benchmarks) behind :class:`rlvr.domains.base.Task`."""
