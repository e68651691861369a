"""The transactional outbox: rows queued with the change that caused them, claimed under a lease,
finished under a fence, and the worker that drives them through the handlers it is given."""
