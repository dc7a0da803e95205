"""Lunogram server: a self-hostable customer-engagement platform speaking the Lunogram Client API."""

__version__ = "0.1.0"
