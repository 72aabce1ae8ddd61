"""Proof suites: the daemon's promises end to end, with every part a real process."""
