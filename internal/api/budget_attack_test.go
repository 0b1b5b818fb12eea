package api

import (
	"io/fs"
	"path/filepath"
	"testing"
)

// TestAttackSparseOutputBomb: sparse files cost a run nothing in its
// tmpfs but would be stored as zeros; what one run stores is bounded by
// its output budget (the disk limit), counted as stored, and the files
// beyond it are reported in artifact_truncation instead of kept.
func TestAttackSparseOutputBomb(t *testing.T) {
	e := newEnv(t) // DiskBytes 64 MiB, CollectFileBytes 8 MiB, 50 output files
	r := e.exec(map[string]any{"lang": "bash", "code": "for i in $(seq 1 40); do truncate -s 7M /mnt/data/f$i.bin; done; echo made"})
	if r.Status != "ok" || r.Stdout != "made\n" || r.Stderr != "" {
		t.Fatalf("%s %q %q", r.Status, r.Stdout, r.Stderr)
	}
	var stored, kept int64
	for _, f := range r.Files {
		kept += f.Size
	}
	filepath.WalkDir(e.storDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				stored += info.Size()
			}
		}
		return nil
	})
	const budget = 64 << 20
	if kept > budget || len(r.Files) != 9 {
		t.Fatalf("%d files, %d bytes kept (budget %d)", len(r.Files), kept, budget)
	}
	// Metadata files are small; no skipped file's bytes stay behind.
	if stored > budget+1<<20 {
		t.Fatalf("%d bytes in storage after one run (budget %d)", stored, budget)
	}
	tr := r.ArtifactTruncation
	if tr == nil || tr.Reasons["total_size"] != 31 || tr.SkippedCount != 31 {
		t.Fatalf("truncation %+v", tr)
	}
}
