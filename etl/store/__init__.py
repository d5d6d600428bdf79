"""The state DB: models, engine and migrations, run locks and heartbeats."""
