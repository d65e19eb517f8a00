"""HTTP and WebSocket API over core and ingest: `api.server.serve()` runs it."""
