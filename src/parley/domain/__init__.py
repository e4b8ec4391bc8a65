"""Models and pure rules: no I/O here."""
