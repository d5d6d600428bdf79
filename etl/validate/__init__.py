"""Validation: great-expectations suites, cross-file rules, a school's reports and French page."""
