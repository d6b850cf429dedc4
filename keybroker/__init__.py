"""The key broker: holds the keys of encrypted images and releases a layer key only to a node whose
current trust report satisfies the TrustPolicies that cover the image, wrapped to a key of that node's
attested session. It runs in the attestation authority (`trustgate-attestation serve --image-keys`),
which knows each node's TPM attestation key."""
