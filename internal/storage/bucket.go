package storage

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/gcsblob" // gs:// buckets, Application Default Credentials
	"gocloud.dev/blob/s3blob"
)

// Cloud uploads go out in parts of uploadPartSize bytes, uploadConcurrency
// at a time. These bound the memory one Put holds, whatever the file's size:
// S3's upload manager allocates (uploadConcurrency+1) part buffers per
// multipart upload, and also reads the first 16 MiB (its fixed multipart
// threshold) into memory to choose between a single and a multipart upload;
// with its defaults (8 MiB parts, 5 at a time) a Put held ~64 MiB. GCS
// buffers one chunk of uploadPartSize (default 16 MiB). 5 MiB is S3's
// smallest part size (and a multiple of GCS's 256 KiB chunk unit); 10,000
// parts of it still allow 48 GiB files. The local backend ignores both.
const (
	uploadPartSize    = 5 << 20
	uploadConcurrency = 2
)

// BucketConfig selects a cloud backend.
type BucketConfig struct {
	Backend    string // "s3" or "gcs"
	S3Bucket   string
	S3Endpoint string // S3-compatible server, e.g. http://127.0.0.1:7070 (path-style)
	S3Region   string
	// GCSBucket is opened with Application Default Credentials, or, when
	// STORAGE_EMULATOR_HOST is set (host:port), without credentials on
	// that emulator, as Google's own client libraries do.
	GCSBucket string
}

// OpenBucket opens an S3 or GCS bucket as a Store.
func OpenBucket(ctx context.Context, c BucketConfig) (*Blob, error) {
	var b *blob.Bucket
	var err error
	switch c.Backend {
	case "s3":
		b, err = openS3(ctx, c)
	case "gcs":
		// gcsblob honours the emulator variable itself, but as host:port
		// only, where Google's libraries also take a URL.
		if h := os.Getenv("STORAGE_EMULATOR_HOST"); strings.Contains(h, "://") {
			return nil, fmt.Errorf("STORAGE_EMULATOR_HOST=%q: want host:port, without a scheme", h)
		}
		b, err = blob.OpenBucket(ctx, "gs://"+url.PathEscape(c.GCSBucket))
	default:
		return nil, fmt.Errorf("storage backend %q: want local, s3 or gcs", c.Backend)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s bucket: %w", c.Backend, err)
	}
	return NewBlob(b), nil
}

// openS3 does what s3blob's s3:// URL opener does, plus abortDetached.
func openS3(ctx context.Context, c BucketConfig) (*blob.Bucket, error) {
	// The region, endpoint and checksum settings, and the standard AWS
	// credential chain, as the URL parameters of the same names set them.
	q := url.Values{}
	if c.S3Region != "" {
		q.Set("region", c.S3Region)
	}
	if c.S3Endpoint != "" {
		q.Set("endpoint", c.S3Endpoint)
		// S3-compatible servers rarely implement the newer checksums.
		q.Set("request_checksum_calculation", "when_required")
		q.Set("response_checksum_validation", "when_required")
	}
	cfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return nil, err
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.S3Endpoint != "" {
			o.UsePathStyle = true // no bucket-name subdomains on a custom endpoint
			o.EndpointOptions.DisableHTTPS = strings.HasPrefix(c.S3Endpoint, "http://")
		}
		o.APIOptions = append(o.APIOptions, abortDetached)
	})
	return s3blob.OpenBucket(ctx, client, c.S3Bucket, &s3blob.Options{
		// The upload manager does not take this from the client.
		RequestChecksumCalculation: cfg.RequestChecksumCalculation,
	})
}

// abortDetached lets AbortMultipartUpload outlive its context's
// cancellation. A Put aborts a failed write by cancelling the writer's
// context; S3's upload manager then aborts the multipart upload with that
// same, cancelled, context, which would fail and leave the uploaded parts
// stored (and billed) until a lifecycle rule removes them.
func abortDetached(st *middleware.Stack) error {
	return st.Initialize.Add(middleware.InitializeMiddlewareFunc("codeexecAbortDetached",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if _, ok := in.Parameters.(*s3.AbortMultipartUploadInput); ok {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
				defer cancel()
				ctx = dctx
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.Before)
}
