"""Decoding audio (PyAV) into the one sample rate the analysers read. Imports no other room."""
