"""The training engine: runs, events, checkpoints. It never imports the UI."""
