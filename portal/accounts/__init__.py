"""Accounts: import, classification and ledger queries."""
