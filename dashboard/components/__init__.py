"""Widgets and data access shared by the pages."""
