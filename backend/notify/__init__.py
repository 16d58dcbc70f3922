"""Notifications (issue 23): channels, rendered messages, a delivery store retried across runs, and the events sent."""
