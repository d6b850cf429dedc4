"""trustgate's validating admission webhook: the backstop that keeps trust-requiring pods off untrusted nodes."""
