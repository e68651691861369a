"""Blueprints: reauth (end user), admin, api, webhooks, health."""
