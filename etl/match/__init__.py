"""Matching: the night's records to accounts (identity rules, logins); decisions, not writes."""
