"""The pure core: report verification and trust decisions. Data in, decision out; no I/O."""
