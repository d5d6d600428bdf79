"""Approval: held plans listed, approved exactly as shown, or rejected."""
