"""Services hold the rules: who may do what, and what happens to the data."""
