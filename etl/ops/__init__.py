"""Operator actions outside the nightly sync: undo, merge, deletion past retention."""
