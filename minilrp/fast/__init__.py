"""The fast path (filled in below)."""
