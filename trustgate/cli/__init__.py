"""`trustctl`, the command line."""
