"""Databases: the group-committing writer (a thread, or for SQLite a child process), the
connection protocol both engines meet, and the schema migrations."""
