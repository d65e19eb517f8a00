"""The database and everything that writes or reads it: the store (the only DuckDB user),
migrations, the analyser registry, the writer (sessions, derived analytics, custom heads), the
scoped Reader, the audit log, notes and corrections. Imports base, media, guard, analysis and
text. The indexes beside the store are kept current through commit hooks
(core.storage.commit_hooks), so storage never imports index."""
