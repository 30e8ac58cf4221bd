"""Storage: SQLite (embedded default) and PostgreSQL (scale-out); all SQL lives here."""
