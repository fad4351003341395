"""datawall: where does the next FLOP buy the most model quality when unique data runs out?"""

__version__ = "0.1.0"
