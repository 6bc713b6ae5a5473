"""battui train commands (being written)."""
