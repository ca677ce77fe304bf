"""Text-to-SQL: Spider and seeded SQLite databases, checked by executing the query."""

from rlvr.domains.sql.task import SqlTask

__all__ = ["SqlTask"]
