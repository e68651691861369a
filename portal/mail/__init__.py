"""Mail: rendering, message building, backends, invitation campaigns and the outbox handler that
sends email.

docs/mail.md describes the delivery policy (at least once), retries, throttling and reminders.
"""
