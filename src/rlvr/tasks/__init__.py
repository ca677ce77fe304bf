"""Domains: prompt building, data sources and generators, each behind :class:`rlvr.tasks.base.Task`."""
