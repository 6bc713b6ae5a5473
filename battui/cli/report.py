"""battui report commands (being written)."""
