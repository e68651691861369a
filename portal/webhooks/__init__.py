"""Webhooks, named by direction: `nylas_in` (notifications from Nylas) and `app_out` (what the
company's app is told)."""
