"""Mail: the outbox, rendering, message building, backends and the worker that sends.

docs/mail.md describes the delivery policy (at least once), retries, throttling and reminders.
"""
