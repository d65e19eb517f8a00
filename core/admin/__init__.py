"""Whole-store operations an operator runs: erasure and retention across every copy,
`emoscope import` of a Ray run's shards, the settings page's model of emoscope.toml. May import
every other room."""
