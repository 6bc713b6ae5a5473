"""battui: robust-fair adversarial training (BAT and its baselines) in the terminal."""

__version__ = "0.1.0"
