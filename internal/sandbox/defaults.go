package sandbox

import "time"

// DefaultLimits fills the zero fields of a Limits (zero means "implementation
// default", never "unlimited").
var DefaultLimits = Limits{
	WallTime:    30 * time.Second,
	CPUTime:     10 * time.Second,
	MemoryBytes: 512 << 20,
	Pids:        128,
	OutputBytes: 1 << 20,
	DiskBytes:   64 << 20,
	FileBytes:   64 << 20,
}

// WithDefaults returns l with every zero field replaced by DefaultLimits'.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	if l.WallTime <= 0 {
		l.WallTime = d.WallTime
	}
	if l.CPUTime <= 0 {
		l.CPUTime = d.CPUTime
	}
	if l.MemoryBytes <= 0 {
		l.MemoryBytes = d.MemoryBytes
	}
	if l.Pids <= 0 {
		l.Pids = d.Pids
	}
	if l.OutputBytes <= 0 {
		l.OutputBytes = d.OutputBytes
	}
	if l.DiskBytes <= 0 {
		l.DiskBytes = d.DiskBytes
	}
	if l.FileBytes <= 0 {
		l.FileBytes = d.FileBytes
	}
	return l
}
