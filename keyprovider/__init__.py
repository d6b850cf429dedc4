"""The node side of encrypted images: `trustgate-keyprovider`, the ocicrypt key provider that containerd's
layer decoder calls, which proves the node to the key broker and unwraps the released layer key."""
