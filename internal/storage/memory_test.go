package storage

import "testing"

// TestMemory holds the in-memory store the unit tests use to the contract
// every backend meets, so a unit test passing on it means something.
func TestUnitMemoryStore(t *testing.T) {
	s := OpenMemory()
	defer s.Close()
	conformance(t, s)
}
