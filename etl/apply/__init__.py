"""Applying: the plan written to the directory (ldap3, hand-encoded requests) and journaled."""
