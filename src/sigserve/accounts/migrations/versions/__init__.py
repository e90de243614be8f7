"""One file per schema change, applied in order (linear history: each names the one before)."""
