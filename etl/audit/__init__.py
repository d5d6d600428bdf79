"""The audit stage: the directory and the state DB compared, repaired, adopted."""
