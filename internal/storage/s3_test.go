package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestS3 runs the conformance suite against the s3 backend talking to
// versitygw, an S3-compatible gateway over a temporary directory.
func TestS3(t *testing.T) {
	bin := serverBin(t, "versitygw")
	const access, secret, bucket = "codeexec-test", "codeexec-test-secret", "codeexec"
	root := t.TempDir()
	// The posix backend serves each directory of its root as a bucket.
	if err := os.Mkdir(filepath.Join(root, bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	port := startServer(t, bin, func(port int) []string {
		return []string{"--access", access, "--secret", secret, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "posix", root}
	})
	// The standard AWS credential chain, fed through the environment; no
	// shared config files from the machine running the tests.
	setenv(t,
		"AWS_ACCESS_KEY_ID", access,
		"AWS_SECRET_ACCESS_KEY", secret,
		"AWS_SESSION_TOKEN", "",
		"AWS_REGION", "us-east-1",
		"AWS_PROFILE", "",
		"AWS_CONFIG_FILE", filepath.Join(root, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE", filepath.Join(root, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED", "true",
	)
	ctx := context.Background()
	s, err := OpenBucket(ctx, BucketConfig{
		Backend:    "s3",
		S3Bucket:   bucket,
		S3Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port),
		S3Region:   "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conformance(t, s)
	t.Run("put-streams", func(t *testing.T) { checkStreams(t, s, 56<<20) })

	t.Run("failed-multipart-put-leaves-no-parts", func(t *testing.T) {
		// Past the upload manager's 16 MiB threshold: a multipart upload,
		// whose stored parts must be aborted when the Put fails.
		key := Key{NewID(), NewID()}
		r := io.MultiReader(&sampledReader{left: 30 << 20, seed: 7}, errReader{})
		if _, err := s.Put(ctx, key, r, Meta{Name: "x.bin"}); err == nil {
			t.Fatal("put of a failing reader succeeded")
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("half-written file visible: %v", err)
		}
		var client *s3.Client
		if !s.b.As(&client) {
			t.Fatal("no S3 client")
		}
		out, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &[]string{bucket}[0]})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range out.Uploads {
			t.Errorf("multipart upload left behind: key %s, id %s", *u.Key, *u.UploadId)
		}
	})
}
