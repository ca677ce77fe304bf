"""Pure scoring functions and the executors (SQLite, sandbox) they use. No model code here."""
