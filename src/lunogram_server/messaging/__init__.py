"""Messaging: channels and providers, templates, the outbox and its senders, subscriptions and tracking."""
