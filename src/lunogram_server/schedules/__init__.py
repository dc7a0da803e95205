"""Scheduled resources (docs/api.md "Schedules"): one-time and recurring schedules per target."""
