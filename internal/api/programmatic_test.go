package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// ptcAnswer is any /exec/programmatic answer.
type ptcAnswer struct {
	Status            string `json:"status"`
	ContinuationToken string `json:"continuation_token"`
	ToolCalls         []struct {
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"tool_calls"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Error  string `json:"error"`
	Code   any    `json:"code"` // an exit code in completed answers, an error code in others
}

// A run whose client never comes back ends at the pause limit: its token
// then answers 410, and nothing of it is left (no process, no working
// directory).
func TestProgrammaticPauseLimitEndsTheRun(t *testing.T) {
	e := newEnv(t)
	a := decode[ptcAnswer](t, e.post("/exec/programmatic", `{"code":"import os\nopen('/mnt/data/x','w').write('1')\nprint(await fetch_page(url='u'))","tools":[{"name":"fetch page"}]}`), 200)
	if a.Status != "tool_call_required" || len(a.ToolCalls) != 1 || a.ToolCalls[0].Name != "fetch page" || string(a.ToolCalls[0].Input) != `{"url":"u"}` {
		t.Fatalf("%+v", a)
	}
	body := `{"continuation_token":"` + a.ContinuationToken + `","tool_results":[{"call_id":"` + a.ToolCalls[0].ID + `","result":"late","is_error":false}]}`
	deadline := time.Now().Add(30 * time.Second)
	for len(e.leftovers()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the paused run is still there 30 s after a 3 s pause limit: %v", e.leftovers())
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := decode[ptcAnswer](t, e.post("/exec/programmatic", body), http.StatusGone)
	if got.Code != "continuation_expired" || !strings.Contains(got.Error, "pause limit") {
		t.Fatalf("%+v", got)
	}
}

// The contract details LibreChat relies on besides the programmatic route.
func TestProgrammaticContractDetails(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	e := newEnv(t)
	t.Run("tool-error-and-names", func(t *testing.T) {
		code := `try:\n    await class_tool(x=1)\nexcept Exception as err:\n    print('error:', err)\nprint(await _2fa_code())`
		a := decode[ptcAnswer](t, e.post("/exec/programmatic", `{"code":"`+code+`","tools":[{"name":"class"},{"name":"2fa-code"}],"shell_output_filter":"rtk","unknown":1}`), 200)
		if len(a.ToolCalls) != 1 || a.ToolCalls[0].Name != "class" {
			t.Fatalf("%+v", a)
		}
		a = decode[ptcAnswer](t, e.post("/exec/programmatic", `{"continuation_token":"`+a.ContinuationToken+`","tool_results":[{"call_id":"`+a.ToolCalls[0].ID+`","result":null,"is_error":true,"error_message":"quota exceeded"}]}`), 200)
		if len(a.ToolCalls) != 1 || a.ToolCalls[0].Name != "2fa-code" || string(a.ToolCalls[0].Input) != `{}` {
			t.Fatalf("%+v", a)
		}
		a = decode[ptcAnswer](t, e.post("/exec/programmatic", `{"continuation_token":"`+a.ContinuationToken+`","tool_results":[{"call_id":"`+a.ToolCalls[0].ID+`","result":"[1, 2]","is_error":false}]}`), 200)
		if a.Status != "completed" || a.Stdout != "error: quota exceeded\n[1, 2]\n" {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("headers-on-every-route-and-exact-length", func(t *testing.T) {
		up := decode[uploadResult](t, e.upload("/upload", map[string]string{"kind": "agent", "id": "agent_x"}, part{"file", "notes.weird-ext", []byte("hello")}), 200)
		resp := e.do("GET", "/download/"+up.SessionID+"/"+up.Files[0].FileID, nil, "X-CodeAPI-Expected-Profile", "default", "X-LibreChat-Code-Worker-ID", "worker-7")
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != 5 {
			t.Fatalf("download: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
		}
		up2 := decode[uploadResult](t, e.upload("/upload", map[string]string{"kind": "skill", "id": "sk", "version": "2"}, part{"file", "notes.weird-ext", []byte("second")}), 200)
		// Two refs with one name: the last wins, never 400.
		res := decode[execResult](t, e.post("/exec", map[string]any{"lang": "py", "code": "print(open('notes.weird-ext').read())", "shell_output_filter": "raw",
			"files": []map[string]string{
				{"id": up.Files[0].FileID, "session_id": up.SessionID, "name": "notes.weird-ext"},
				{"id": up2.Files[0].FileID, "session_id": up2.SessionID, "name": "notes.weird-ext"},
			}}, "X-LibreChat-Code-Worker-ID", "worker-7"), 200)
		if res.Stdout != "second\n" {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("multipart-names", func(t *testing.T) {
		up := decode[uploadResult](t, e.upload("/upload", nil, part{"file", "résumé €.txt", []byte("x")}), 200)
		if up.Files[0].Filename != "résumé €.txt" {
			t.Fatalf("%+v", up)
		}
		for _, name := range []string{"a\x01b.txt", "tab\there.txt", "nul\x00.txt"} {
			resp := e.upload("/upload", nil, part{"file", name, []byte("x")})
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("%q: status %d, want 400", name, resp.StatusCode)
			}
		}
	})
}
