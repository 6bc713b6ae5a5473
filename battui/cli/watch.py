"""battui watch commands (being written)."""
