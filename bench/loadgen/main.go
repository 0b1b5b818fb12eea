// Command loadgen drives a codeexec server with concurrent /exec calls and
// prints a JSON summary: status codes, latency percentiles, 429 shapes and
// whether every generated file could be downloaded back intact. Its request
// loop is bounded by -n and -duration.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

type summary struct {
	Requests      int            `json:"requests"`
	Status        map[string]int `json:"status"`
	Bad429        int            `json:"bad_429"`    // 429s without the LibreChat-readable shape
	LostFiles     int            `json:"lost_files"` // 200s whose file did not download intact
	WrongOutput   int            `json:"wrong_output"`
	TransportErrs int            `json:"transport_errors"`
	P50MS         float64        `json:"p50_ms"`
	P99MS         float64        `json:"p99_ms"`
	PerSecond     float64        `json:"per_second"`
	Seconds       float64        `json:"seconds"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "server base URL")
	key := flag.String("key", os.Getenv("CODEEXEC_API_KEY"), "API key")
	conc := flag.Int("c", 16, "concurrent clients")
	n := flag.Int("n", 200, "total requests")
	dur := flag.Duration("duration", 2*time.Minute, "stop sending after this long")
	lang := flag.String("lang", "py", "language")
	withFile := flag.Bool("files", true, "each execution writes a file that is downloaded and checked")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc}}
	var (
		mu   sync.Mutex
		s    = summary{Status: map[string]int{}}
		lats []time.Duration
		next int
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= *n || ctx.Err() != nil {
			return 0, false
		}
		next++
		return next, true
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				code := fmt.Sprintf("print(%d)", i)
				if *withFile {
					code = fmt.Sprintf("open('r%d.txt','w').write('%d')\nprint(%d)", i, i, i)
				}
				if *lang == "bash" {
					code = fmt.Sprintf("echo -n %d > r%d.txt; echo %d", i, i, i)
				}
				t0 := time.Now()
				res := one(ctx, client, *url, *key, *lang, code, i, *withFile)
				lat := time.Since(t0)
				mu.Lock()
				s.Requests++
				s.Status[strconv.Itoa(res.status)]++
				switch {
				case res.transport:
					s.TransportErrs++
				case res.status == 429 && !res.good429:
					s.Bad429++
				case res.status == 200 && res.lostFile:
					s.LostFiles++
				case res.status == 200 && res.wrongOutput:
					s.WrongOutput++
				}
				if res.status == 200 {
					lats = append(lats, lat)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.Seconds = time.Since(start).Seconds()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if len(lats) > 0 {
		s.P50MS = ms(lats[len(lats)/2])
		s.P99MS = ms(lats[min(len(lats)-1, len(lats)*99/100)])
		s.PerSecond = float64(len(lats)) / s.Seconds
	}
	json.NewEncoder(os.Stdout).Encode(s)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type result struct {
	status                int
	transport, good429    bool
	lostFile, wrongOutput bool
}

func one(ctx context.Context, c *http.Client, base, key, lang, code string, i int, withFile bool) result {
	body, _ := json.Marshal(map[string]any{"lang": lang, "code": code})
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/exec", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		return result{transport: true}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode}
	switch resp.StatusCode {
	case 429:
		var e struct {
			Error string `json:"error"`
			Retry int    `json:"retry_after_seconds"`
		}
		r.good429 = json.Unmarshal(b, &e) == nil && e.Error == "rate_limited" && e.Retry >= 1 && resp.Header.Get("Retry-After") != ""
	case 200:
		var out struct {
			SessionID string `json:"session_id"`
			Stdout    string `json:"stdout"`
			Stderr    string `json:"stderr"`
			Status    string `json:"status"`
			ExitCode  int    `json:"exit_code"`
			Files     []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"files"`
		}
		// A clean run: exactly its stdout, nothing on stderr.
		if json.Unmarshal(b, &out) != nil || out.Stdout != fmt.Sprintf("%d\n", i) || out.Stderr != "" || out.Status != "ok" || out.ExitCode != 0 {
			r.wrongOutput = true
			return r
		}
		if !withFile {
			return r
		}
		if len(out.Files) != 1 {
			r.lostFile = true
			return r
		}
		dreq, _ := http.NewRequestWithContext(ctx, "GET", base+"/download/"+out.SessionID+"/"+out.Files[0].ID, nil)
		dreq.Header.Set("X-API-Key", key)
		dresp, err := c.Do(dreq)
		if err != nil {
			r.lostFile = true
			return r
		}
		got, _ := io.ReadAll(dresp.Body)
		dresp.Body.Close()
		r.lostFile = dresp.StatusCode != 200 || string(got) != strconv.Itoa(i)
	}
	return r
}
