"""Planning: desired entries, scope and absence, guards, the pure diff against a stored view."""
