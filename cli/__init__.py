"""The `emoscope` command line. It sits above core/, ingest/ and dashboard/: the one place
that may start any of them."""
