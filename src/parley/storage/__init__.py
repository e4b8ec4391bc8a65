"""Storage: one port (``base.Storage``) and one adapter per backend."""
