package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
)

// countingReader counts what the client has handed to the connection.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestAttackBodiesBeforeAdmission: while every execution slot is taken, a
// queued /exec's large body is not read (the client's writes stall in the
// socket buffers), and runs whole once admitted; a body declared larger
// than the JSON limit is 413 at once, unread; one caller cannot have more
// than MaxInFlight requests in progress (429), while another still can.
// Fails with the body decoded before admission (the queued body is read
// whole) or without the per-caller bound.
func TestAttackBodiesBeforeAdmission(t *testing.T) {
	if !onBackends(t, cold) { // HTTP and admission: the backend plays no part
		return
	}
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) { a.Keys = append(a.Keys, otherKey) })
	srv := e.server()
	adm := admission.New(1, 8, time.Minute)
	srv.Admission = adm
	srv.Limits.MaxJSONBytes = 1 << 20
	srv.MaxInFlight = 1

	// The test holds the only slot itself.
	release, _, err := adm.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	// Declared over the JSON limit: 413 at once, though no slot is free.
	big := decode[map[string]string](t, e.do("POST", "/exec", bytes.NewReader(make([]byte, 2<<20)), "Content-Type", "application/json"), http.StatusRequestEntityTooLarge)
	if big["error"] != "request body larger than 1048576 bytes" {
		t.Fatalf("body over the limit: %v", big)
	}
	srv.Limits.MaxJSONBytes = 128 << 20

	// A 48 MiB body, queued (padding in a field the server ignores).
	body, queued := e.postPadded(t, "/exec", `{"lang":"bash","code":"echo ran","padding":"`, 48<<20)
	until(t, 20*time.Second, "the large request never queued", func() bool { return adm.Stats().Queued == 1 })

	// The same caller's second request in progress is refused; another
	// caller's is not (it gets its place in the queue).
	got := decode[map[string]any](t, e.post("/exec", map[string]any{"lang": "bash", "code": "echo third"}), http.StatusTooManyRequests)
	if !strings.HasPrefix(got["message"].(string), "Too many requests in progress for this caller (at most 1)") {
		t.Fatalf("second request of one caller: %v", got)
	}
	other := make(chan execResult, 1)
	go func() {
		other <- decode[execResult](t, e.postIn(t, "/exec", map[string]any{"lang": "bash", "code": "echo other"}, "X-API-Key", otherKey), 200)
	}()
	until(t, 20*time.Second, "another caller's request never queued", func() bool { return adm.Stats().Queued == 2 })

	// Socket buffers take a few MiB of the queued body; a server decoding
	// before admission takes all 48.
	n := body.n.Load()
	t.Logf("the client sent %d bytes of the queued body", n)
	if n >= 24<<20 {
		t.Fatalf("the queued request's body was read while it waited: %d bytes", n)
	}
	release()
	if r := decode[execResult](t, received(t, <-queued), 200); r.Stdout != "ran\n" {
		t.Fatalf("the queued request, once admitted: %+v", r)
	}
	if r := <-other; r.Stdout != "other\n" {
		t.Fatalf("the other caller's request: %+v", r)
	}
}

// TestAttackProgrammaticBodiesBeforeAdmission: /exec/programmatic reads a
// new run's body as /exec does: while every slot is taken, a queued 48 MiB
// body is not read, and runs once admitted. A continuation is not queued
// behind the slot its own paused run holds: with that run holding the
// only slot, a 1 MiB continuation is read and completes the run. Fails
// with the body decoded before admission (the queued body is read whole),
// or with every large body admitted before it is read (the continuation
// waits on its own run until its pause limit or the queue gives up).
func TestAttackProgrammaticBodiesBeforeAdmission(t *testing.T) {
	if !onBackends(t, cold) { // HTTP and admission: the backend plays no part
		return
	}
	e := newEnv(t)
	srv := e.server()
	adm := admission.New(1, 8, 20*time.Second)
	srv.Admission = adm
	srv.Limits.MaxJSONBytes = 128 << 20

	release, _, err := adm.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	body, queued := e.postPadded(t, "/exec/programmatic", `{"lang":"py","code":"print('ran')","tools":[],"padding":"`, 48<<20)
	// A server that decodes first has read all of it before it queues.
	until(t, 20*time.Second, "the large programmatic request never queued", func() bool { return adm.Stats().Queued == 1 })
	n := body.n.Load()
	t.Logf("the client sent %d bytes of the queued body", n)
	if n >= 24<<20 {
		t.Fatalf("the queued programmatic request's body was read while it waited: %d bytes", n)
	}
	release()
	if a := decode[ptcAnswer](t, received(t, <-queued), 200); a.Status != "completed" || a.Stdout != "ran\n" {
		t.Fatalf("the queued request, once admitted: %+v", a)
	}

	// A paused run holds the only slot; its large continuation is served.
	a := decode[ptcAnswer](t, e.post("/exec/programmatic", `{"code":"print(len(await echo()))","tools":[{"name":"echo"}]}`), 200)
	if a.Status != "tool_call_required" || len(a.ToolCalls) != 1 || adm.Stats().Running != 1 {
		t.Fatalf("%+v (running %d)", a, adm.Stats().Running)
	}
	result := strings.Repeat("r", 1<<20)
	cont := `{"continuation_token":"` + a.ContinuationToken + `","tool_results":[{"call_id":"` + a.ToolCalls[0].ID + `","result":"` + result + `","is_error":false}]}`
	if a := decode[ptcAnswer](t, e.post("/exec/programmatic", cont), 200); a.Status != "completed" || a.Stdout != "1048576\n" {
		t.Fatalf("the large continuation: %+v", a)
	}
	until(t, 5*time.Second, "the run's slot was not given back", func() bool { return adm.Stats().Running == 0 })
}

// postPadded posts to path in the background a JSON body of prefix, size
// bytes of padding and the closing `"}`, counting what the client gets to
// send; the answer arrives on the channel once the server gives it (nil
// when the request failed, which is reported).
func (e *env) postPadded(t *testing.T, path, prefix string, size int) (*countingReader, <-chan *http.Response) {
	body := &countingReader{r: io.MultiReader(strings.NewReader(prefix), strings.NewReader(strings.Repeat("x", size)), strings.NewReader(`"}`))}
	answer := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.srv.URL+path, body)
		req.ContentLength = int64(len(prefix) + size + 2)
		req.Header.Set("X-API-Key", testKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		answer <- resp
	}()
	return body, answer
}

// received is a background request's answer; a failed one (nil) ends the
// test, already reported.
func received(t *testing.T, resp *http.Response) *http.Response {
	t.Helper()
	if resp == nil {
		t.FailNow()
	}
	return resp
}
