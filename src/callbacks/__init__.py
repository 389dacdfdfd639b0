"""Lightning callbacks of the template (enabled through configs/callbacks)."""
