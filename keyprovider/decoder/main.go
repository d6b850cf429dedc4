// Command trustgate-layer-decoder is the stream processor containerd runs to turn an encrypted
// image layer (ocicrypt, media types "+encrypted") into the plain layer it unpacks.
//
// containerd starts it with the encrypted blob on stdin and, on file descriptor 3, the payload
// that its CRI plugin adds to local pulls when image_decryption.key_model is "node": imgcrypt's
// Payload (the layer's descriptor, with its annotations, and a decryption configuration). The
// layer key is unwrapped by ocicrypt's key wrappers, among them the key providers listed in
// OCICRYPT_KEYPROVIDER_CONFIG (trustgate-keyprovider), and the plain layer goes to stdout.
//
// It does what imgcrypt's ctd-decoder does, built from the ocicrypt and imgcrypt modules alone:
// imgcrypt's own command module cannot be built from the module proxy. ocicrypt checks the layer's
// HMAC (under the layer key) when the stream ends, and containerd checks the unpacked layer against
// the image config's diff id; a digest of the plain blob, when ocicrypt reports one, is checked too.
// Every failure exits 1 with the reason on stderr (containerd puts it in the pull's error, kubelet
// in the pod's events).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/containerd/imgcrypt/v2"
	"github.com/containerd/typeurl/v2"
	"github.com/containers/ocicrypt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func main() {
	if err := decrypt(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "trustgate-layer-decoder: %v\n", err)
		os.Exit(1)
	}
}

func payload() (*imgcrypt.Payload, error) {
	data, err := io.ReadAll(os.NewFile(3, "payload"))
	if err != nil {
		return nil, fmt.Errorf("read the payload on fd 3 (is image_decryption.key_model \"node\" and use_local_image_pull set?): %w", err)
	}
	var message anypb.Any
	if err := proto.Unmarshal(data, &message); err != nil {
		return nil, fmt.Errorf("the payload on fd 3 is not a protobuf Any: %w", err)
	}
	value, err := typeurl.UnmarshalAny(&message)
	if err != nil {
		return nil, fmt.Errorf("the payload on fd 3 is not an imgcrypt Payload: %w", err)
	}
	p, ok := value.(*imgcrypt.Payload)
	if !ok {
		return nil, fmt.Errorf("the payload on fd 3 is a %T, not an imgcrypt Payload", value)
	}
	return p, nil
}

func decrypt(in io.Reader, out io.Writer) error {
	p, err := payload()
	if err != nil {
		return err
	}
	plain, expected, err := ocicrypt.DecryptLayer(&p.DecryptConfig, in, p.Descriptor, false)
	if err != nil {
		return fmt.Errorf("layer %s: %w", p.Descriptor.Digest, err)
	}
	if expected == "" {
		if _, err := io.Copy(out, plain); err != nil {
			return fmt.Errorf("layer %s: %w", p.Descriptor.Digest, err)
		}
		return nil
	}
	verifier := expected.Verifier()
	if _, err := io.Copy(io.MultiWriter(out, verifier), plain); err != nil {
		return fmt.Errorf("layer %s: %w", p.Descriptor.Digest, err)
	}
	if !verifier.Verified() {
		return fmt.Errorf("layer %s: the decrypted layer is not %s", p.Descriptor.Digest, expected)
	}
	return nil
}
