package storage

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestGCS runs the conformance suite against the gcs backend talking to
// fake-gcs-server, the Cloud Storage emulator, reached the way Google's own
// client libraries reach an emulator: STORAGE_EMULATOR_HOST.
func TestGCS(t *testing.T) {
	bin := serverBin(t, "fake-gcs-server")
	const bucket = "codeexec"
	root := t.TempDir()
	port := startServer(t, bin, func(port int) []string {
		host := fmt.Sprintf("127.0.0.1:%d", port)
		return []string{
			"-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
			"-backend", "filesystem", "-filesystem-root", filepath.Join(root, "data"),
			"-public-host", host, "-external-url", "http://" + host,
			"-log-level", "error",
		}
	})
	host := fmt.Sprintf("127.0.0.1:%d", port)
	setenv(t,
		"STORAGE_EMULATOR_HOST", host,
		// Nothing of the machine's own Google credentials.
		"GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(root, "no-credentials.json"),
		"CLOUDSDK_CONFIG", filepath.Join(root, "no-gcloud"),
	)
	// Create the bucket through the emulator's JSON API.
	resp, err := http.Post("http://"+host+"/storage/v1/b?project=codeexec-test", "application/json",
		strings.NewReader(`{"name":"`+bucket+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating bucket: %s", resp.Status)
	}
	ctx := context.Background()
	s, err := OpenBucket(ctx, BucketConfig{Backend: "gcs", GCSBucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conformance(t, s)
	t.Run("put-streams", func(t *testing.T) { checkStreams(t, s, 56<<20) })
}
