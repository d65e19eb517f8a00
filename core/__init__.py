"""Domain types, labels, decoding, metrics and the store: no torch, no streamlit."""
