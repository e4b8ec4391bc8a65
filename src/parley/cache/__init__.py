"""In-process caches and change tracking."""
