"""Reporting: result files (exam.py, classify.py), terminal tables (tables.py, speed.py)."""
