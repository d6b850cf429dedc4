"""Serving the HTTP services: gunicorn over TLS, probes and metrics."""
