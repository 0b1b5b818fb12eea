package storage

import "gocloud.dev/blob/memblob"

// OpenMemory opens a store held in this process's memory: the same Blob
// code as the real backends over gocloud's in-memory bucket, for tests
// that need a store but no disk or server.
func OpenMemory() *Blob { return NewBlob(memblob.OpenBucket(nil)) }
