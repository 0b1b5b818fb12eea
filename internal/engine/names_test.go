package engine

import (
	"errors"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	good := []string{"a.csv", "dir/b.txt", "x y (1).png", "ünï/çødé.md", strings.Repeat("d/", 9) + "f", ".hidden"}
	for _, n := range good {
		if got, err := CleanName(n); err != nil || got != n {
			t.Errorf("CleanName(%q) = %q, %v", n, got, err)
		}
	}
	bad := []string{"", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", ".", "..", "a\x00b", "a\nb",
		`..\x`, strings.Repeat("a", 257), strings.Repeat("d/", 10) + "f", "\xff\xfe"}
	for _, n := range bad {
		if _, err := CleanName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("CleanName(%q) accepted (err %v)", n, err)
		}
	}
}
