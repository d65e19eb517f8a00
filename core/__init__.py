"""Emoscope's domain, in rooms (docs/architecture.md): base → media, guard → analysis → text →
storage → index, intake → insight → reporting → admin. A room imports only rooms to its left
(checked in tests/test_architecture.py); nothing in core imports torch, FunASR or Streamlit."""
