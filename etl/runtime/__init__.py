"""How the sync shares the machine: CPU slots, priority, GC deferral, file locks."""
