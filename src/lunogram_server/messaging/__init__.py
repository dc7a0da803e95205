"""Messaging: channels and their providers, templates, the outbox and its senders, subscriptions and tracking."""
