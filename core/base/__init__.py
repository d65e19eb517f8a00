"""Small pure helpers every room may import: names, labels, times, domain types, periods,
the paths beside the database (places), private files and the one emoscope.toml reader.
Imports no other room."""
