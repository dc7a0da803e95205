"""Scheduled resources (CONTRACT.md "UpsertScheduled", "Schedules"): one-time and recurring schedules per target."""
