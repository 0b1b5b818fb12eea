// Package warm is the warm pool (Pool): a Sandbox that wraps a base
// backend and serves single-step runs from long-lived Python templates
// (zygote.py with its C helper and reaper) whose forked children are
// isolated and parked before a run needs them; every other spec, and every
// spec while no child is ready, goes to the base. It must not know
// languages beyond the interpreter and environment it is configured with,
// requests or HTTP.
package warm
