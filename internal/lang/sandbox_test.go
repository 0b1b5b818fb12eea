package lang

import (
	"slices"
	"testing"
)

func TestPythonImportsBeyondStdlib(t *testing.T) {
	std := map[string]bool{"os": true, "sys": true, "json": true, "collections": true, "math": true}
	for src, want := range map[string]bool{
		"print(1)":                                       false,
		"import os, sys\nimport json as j":               false,
		"from collections.abc import Mapping":            false,
		"def f():\n    import math\n    return 1":        false,
		"import numpy as np":                             true,
		"import os, pandas":                              true,
		"from matplotlib import pyplot":                  true,
		"from . import local":                            true,
		"import mymodule  # uploaded to /mnt/data":       true,
		"m = __import__('numpy')":                        true,
		"import importlib\nimportlib.import_module('x')": true,
		"exec('import numpy')":                           true,
		"import os\nif True: import scipy":               false, // not at a line start: taken as stdlib-only; runs lean, correctly, just slower
	} {
		if got := PythonImportsBeyond([]byte(src), std); got != want {
			t.Errorf("%q: got %v, want %v", src, got, want)
		}
	}
}

// TestEtcUnion: lang.Etc is every language's /etc needs, each once, in
// table order (what main hands the sandbox).
func TestEtcUnion(t *testing.T) {
	got := Etc()
	want := []string{"python3", "python3.*", "matplotlibrc", "java-*", "php", "ldc2.conf", "R", "perl", "ImageMagick-*"}
	if !slices.Equal(got, want) {
		t.Fatalf("Etc() = %q, want %q", got, want)
	}
}
