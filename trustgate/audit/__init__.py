"""The audit of rejected pods: the record, its sinks, and reading it back."""
