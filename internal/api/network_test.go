package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/egress"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
)

// The networked section of the attack suite runs without internet: the
// "internet" is a server on 198.18.77.1 (a reserved range the egress layer
// denies like any special address, exempted for these tests only), the
// private network a server on 10.213.77.1, both on the host's lo, and DNS
// a server of the test's own.
const (
	netPublic  = "198.18.77.1"
	netPrivate = "10.213.77.1"
)

// netWorld is the test's small internet.
type netWorld struct {
	public, private, loopback int // ports of the HTTP servers
	udpEcho                   int // port of a UDP echo server on netPublic
	greeter                   int // port of a server on netPublic that speaks first
	resolver                  *net.Resolver
}

// newNetWorld adds the addresses to lo and starts the servers and DNS.
func newNetWorld(t *testing.T) *netWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "the network tests add addresses to lo: they need root")
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{netPublic, netPrivate} {
		addr, _ := netlink.ParseAddr(a + "/32")
		if err := netlink.AddrReplace(lo, addr); err != nil {
			t.Fatalf("add %s to lo: %v", a, err)
		}
		t.Cleanup(func() { netlink.AddrDel(lo, addr) })
	}
	w := &netWorld{}
	serve := func(host, body string) int {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, body) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().(*net.TCPAddr).Port
	}
	w.public = serve(netPublic, "hello from the internet")
	w.private = serve(netPrivate, "private data")
	w.loopback = serve("127.0.0.1", "host loopback data")
	echo, err := net.ListenPacket("udp", net.JoinHostPort(netPublic, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(append([]byte("echo: "), buf[:n]...), from)
		}
	}()
	w.udpEcho = echo.LocalAddr().(*net.UDPAddr).Port
	greet, err := net.Listen("tcp", net.JoinHostPort(netPublic, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { greet.Close() })
	go func() {
		for {
			c, err := greet.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 hello\r\n"))
			c.Close()
		}
	}()
	w.greeter = greet.Addr().(*net.TCPAddr).Port

	// DNS: allowed.test is the public server, private.test points inside
	// (a rebinding attempt), everything else does not exist.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	zone := map[string]string{"allowed.test.": netPublic, "other.test.": netPublic, "private.test.": netPrivate}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			rc := dnsmessage.RCodeNameError
			ip, ok := zone[strings.ToLower(q.Name.String())]
			if ok {
				rc = dnsmessage.RCodeSuccess
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: rc})
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if ok && q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
					dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()})
			}
			out, _ := b.Finish()
			pc.WriteTo(out, from)
		}
	}()
	dnsAddr := pc.LocalAddr().String()
	w.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dnsAddr)
	}}
	return w
}

// netEnv is a server with network on under cfg (its Resolver is the
// world's).
func (w *netWorld) netEnv(t *testing.T, cfg egress.Config, opts ...envOption) *env {
	t.Helper()
	cfg.Resolver = w.resolver
	svc := egress.New(cfg)
	boxWrappers.Store(t, func(b sandbox.Sandbox) sandbox.Sandbox { return egress.Wrap(b, svc) })
	opts = append(opts, func(l *engine.Limits, _ *auth.Config) { l.Network = true })
	return newEnv(t, opts...)
}

func mustPolicy(t *testing.T, mode, allow string) egress.Policy {
	t.Helper()
	p, err := egress.ParsePolicy(mode, allow)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// netProbe tries, in one run, what code on an allowlisted network would:
// each line says what happened.
const netProbe = `
import socket, ssl, urllib.request, errno
def tcp(host, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        return "open: " + data.split(b"\r\n\r\n", 1)[-1].decode()
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except socket.gaierror as e:
        return "gaierror " + ("EAI_NONAME" if e.args[0] == socket.EAI_NONAME else str(e.args[0]))
print("direct ip:", tcp("198.18.77.1", PUBLIC))
print("private:", tcp("10.213.77.1", PRIVATE))
print("loopback:", tcp("127.0.0.1", LOOPBACK))
print("metadata:", tcp("169.254.169.254", 80))
print("denied name:", resolve("denied.test"))
print("rebinding:", resolve("private.test"))
print("allowed name:", resolve("allowed.test"))
print("allowed:", urllib.request.urlopen("http://allowed.test:%d/" % PUBLIC, timeout=5).read().decode())
s = socket.create_connection(("allowed.test", PUBLIC), timeout=5)
try:
    ssl.create_default_context().wrap_socket(s, server_hostname="evil.test")
    print("sni: handshake done")
except OSError as e:
    print("sni: refused")
s = socket.create_connection(("allowed.test", PUBLIC), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
print("http host:", s.recv(100) or "closed")
s = socket.create_connection(("allowed.test", PUBLIC), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
print("pipelined: answered", data.count(b"HTTP/1.1 200"))
s = socket.create_connection(("allowed.test", GREETER), timeout=3)
print("server first:", s.recv(100).decode().strip())
for name, fam, typ in (("AF_PACKET", 17, socket.SOCK_RAW), ("AF_VSOCK", 40, socket.SOCK_STREAM), ("AF_NETLINK", 16, socket.SOCK_RAW), ("AF_ALG", 38, socket.SOCK_SEQPACKET)):
    try:
        socket.socket(fam, typ).close()
        print(name + ": created")
    except OSError as e:
        print(name + ":", errno.errorcode.get(e.errno, e.errno))
`

func (w *netWorld) probe() string {
	r := strings.NewReplacer("GREETER", fmt.Sprint(w.greeter), "PUBLIC", fmt.Sprint(w.public), "PRIVATE", fmt.Sprint(w.private), "LOOPBACK", fmt.Sprint(w.loopback))
	return r.Replace(netProbe)
}

// TestNetworkEgressAllowlist: with an allowlist, code reaches the listed
// name and nothing else: not the host's loopback, not a private address,
// not the metadata endpoint, not an address it did not resolve through an
// allowed name, not a name off the list, not an allowed name's address
// under another TLS server name; and no raw, vsock, netlink or alg socket.
// Each denial is a line in stderr.
func TestNetworkEgressAllowlist(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{
		Policy: mustPolicy(t, "allowlist", "allowed.test,private.test"),
		Exempt: []netip.Prefix{netip.MustParsePrefix(netPublic + "/32")},
	})
	r := e.exec(map[string]any{"lang": "py", "code": w.probe()})
	wantOut := "direct ip: ConnectionRefusedError\n" +
		"private: ConnectionRefusedError\n" +
		"loopback: ConnectionRefusedError\n" +
		"metadata: ConnectionRefusedError\n" +
		"denied name: gaierror EAI_NONAME\n" +
		"rebinding: gaierror EAI_NONAME\n" +
		"allowed name: ['198.18.77.1']\n" +
		"allowed: hello from the internet\n" +
		"sni: refused\n" +
		"http host: closed\n" +
		"pipelined: answered 1\n" +
		"server first: 220 hello\n"
	if testBackend() == gvisor {
		// Debian's runsc ignores the seccomp rule's errno.
		wantOut += "AF_PACKET: EPERM\nAF_VSOCK: EPERM\nAF_NETLINK: EPERM\nAF_ALG: EPERM\n"
	} else {
		wantOut += "AF_PACKET: EAFNOSUPPORT\nAF_VSOCK: EAFNOSUPPORT\nAF_NETLINK: EAFNOSUPPORT\nAF_ALG: EAFNOSUPPORT\n"
	}
	wantErr := fmt.Sprintf("codeexec: network: connection to 198.18.77.1:%d denied (not allowed by policy)\n"+
		"codeexec: network: connection to 10.213.77.1:%d denied (private address)\n"+
		"codeexec: network: connection to 169.254.169.254:80 denied (metadata address)\n"+
		"codeexec: network: DNS lookup of denied.test denied (name not allowed)\n"+
		"codeexec: network: DNS answer 10.213.77.1 for private.test denied (private address)\n"+
		"codeexec: network: TLS connection to 198.18.77.1:%d (server name \"evil.test\") denied (TLS server name not allowed)\n"+
		"codeexec: network: HTTP request to 198.18.77.1:%d (host \"evil.test\") denied (HTTP host not allowed)\n",
		w.public, w.private, w.public, w.public)
	if r.Status != "ok" || r.Stdout != wantOut || r.Stderr != wantErr {
		t.Fatalf("status %q\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", r.Status, r.Stdout, wantOut, r.Stderr, wantErr)
	}
}

// TestNetworkEgressReservedWithoutExemption: the same "internet" server,
// without the tests' exemption, is a reserved address like any other: not
// reachable by address, and left out of DNS answers.
func TestNetworkEgressReservedWithoutExemption(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{Policy: mustPolicy(t, "public", "")})
	code := fmt.Sprintf(`
import socket
s = socket.socket(); s.settimeout(5)
try:
    s.connect(("198.18.77.1", %d)); print("open")
except OSError as e:
    print(type(e).__name__)
try:
    socket.getaddrinfo("allowed.test", 80, socket.AF_INET); print("resolved")
except socket.gaierror as e:
    print("gaierror", e.args[0] == socket.EAI_NONAME)
`, w.public)
	r := e.exec(map[string]any{"lang": "py", "code": code})
	wantErr := fmt.Sprintf("codeexec: network: connection to 198.18.77.1:%d denied (special-purpose address)\n"+
		"codeexec: network: DNS answer 198.18.77.1 for allowed.test denied (special-purpose address)\n", w.public)
	if r.Status != "ok" || r.Stdout != "ConnectionRefusedError\ngaierror True\n" || r.Stderr != wantErr {
		t.Fatalf("status %q\nstdout:\n%s\nstderr:\n%s\nwant:\n%s", r.Status, r.Stdout, r.Stderr, wantErr)
	}
}

// TestNetworkEgressConnectionCap: a run opens at most its cap of
// connections; the next is refused and said so.
func TestNetworkEgressConnectionCap(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{
		Policy: mustPolicy(t, "public", ""), MaxConns: 2,
		Exempt: []netip.Prefix{netip.MustParsePrefix(netPublic + "/32")},
	})
	code := fmt.Sprintf(`
import socket
for i in range(3):
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect(("198.18.77.1", %d)); print(i, "open")
    except OSError as e:
        print(i, type(e).__name__)
    s.close()
`, w.public)
	r := e.exec(map[string]any{"lang": "py", "code": code})
	wantErr := fmt.Sprintf("codeexec: network: connection to 198.18.77.1:%d denied (connection limit)\n", w.public)
	if r.Status != "ok" || r.Stdout != "0 open\n1 open\n2 ConnectionRefusedError\n" || r.Stderr != wantErr {
		t.Fatalf("status %q\nstdout:\n%s\nstderr:\n%s", r.Status, r.Stdout, r.Stderr)
	}
}

// TestNetworkEgressStateful: a live session has one network for its life,
// under the same policy: the allowed name answers, a private address is
// refused, in every call, and each call's stderr says what it was denied.
// (Live sessions are not served on gVisor.)
func TestNetworkEgressStateful(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{
		Policy: mustPolicy(t, "allowlist", "allowed.test"),
		Exempt: []netip.Prefix{netip.MustParsePrefix(netPublic + "/32")},
	}, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30 })
	e.withRuntime(runtime.Config{})
	code := fmt.Sprintf(`
import socket, urllib.request
print(urllib.request.urlopen("http://allowed.test:%d/", timeout=5).read().decode())
s = socket.socket(); s.settimeout(5)
try:
    s.connect(("10.213.77.1", %d)); print("open")
except OSError as e:
    print(type(e).__name__)
`, w.public, w.private)
	// Each call's answer names what that call was denied.
	wantErr := fmt.Sprintf("codeexec: network: connection to 10.213.77.1:%d denied (private address)\n", w.private)
	for i := range 2 {
		r := e.live("net", map[string]any{"lang": "py", "code": code})
		if r.Status != "ok" || r.Stdout != "hello from the internet\nConnectionRefusedError\n" || r.Stderr != wantErr {
			t.Fatalf("call %d: %+v\nwant stderr %q", i, r, wantErr)
		}
	}
	r := e.live("net", map[string]any{"lang": "py", "code": "print(1)"})
	if r.Status != "ok" || r.Stdout != "1\n" || r.Stderr != "" {
		t.Fatalf("a call denied nothing: %+v", r)
	}
}

// TestNetworkEgressCallerClaim: a JWT's codeexec_network claim narrows the
// deployment's policy (public here): "off" takes the network away, an
// allowlist keeps only its names, "public" cannot widen past the
// deployment, and a malformed claim is refused.
func TestNetworkEgressCallerClaim(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{
		Policy: mustPolicy(t, "allowlist", "allowed.test,other.test"),
		Exempt: []netip.Prefix{netip.MustParsePrefix(netPublic + "/32")},
	}, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer = "s3cret", "codeapi", "librechat"
	})
	tok := func(claim any) string {
		c := jwt.MapClaims{"sub": "u1", "aud": "codeapi", "iss": "librechat", "exp": time.Now().Add(time.Minute).Unix()}
		if claim != nil {
			c["codeexec_network"] = claim
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	code := `
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("198.18.77.1", PUBLIC)); print("direct open")
except OSError as e:
    print("direct", type(e).__name__)
for name in ("allowed.test", "other.test"):
    try:
        socket.getaddrinfo(name, 80, socket.AF_INET); print(name, "resolved")
    except socket.gaierror:
        print(name, "not resolved")
`
	code = strings.ReplaceAll(code, "PUBLIC", fmt.Sprint(w.public))
	for _, c := range []struct {
		claim      any
		out, notes string
	}{
		{nil, "direct ConnectionRefusedError\nallowed.test resolved\nother.test resolved\n",
			fmt.Sprintf("codeexec: network: connection to 198.18.77.1:%d denied (not allowed by policy)\n", w.public)},
		{"off", "direct OSError\nallowed.test not resolved\nother.test not resolved\n", ""},
		{"other.test", "direct ConnectionRefusedError\nallowed.test not resolved\nother.test resolved\n",
			fmt.Sprintf("codeexec: network: connection to 198.18.77.1:%d denied (not allowed by policy)\n", w.public) +
				"codeexec: network: DNS lookup of allowed.test denied (name not allowed)\n"},
		{"public", "direct ConnectionRefusedError\nallowed.test resolved\nother.test resolved\n",
			fmt.Sprintf("codeexec: network: connection to 198.18.77.1:%d denied (not allowed by policy)\n", w.public)},
	} {
		r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "py", "code": code}, "X-API-Key", "", "Authorization", "Bearer "+tok(c.claim)), http.StatusOK)
		if r.Stdout != c.out || r.Stderr != c.notes {
			t.Errorf("claim %v:\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", c.claim, r.Stdout, c.out, r.Stderr, c.notes)
		}
	}
	resp := e.post("/exec", map[string]any{"lang": "py", "code": "print(1)"}, "X-API-Key", "", "Authorization", "Bearer "+tok("bad name"))
	got := decode[map[string]string](t, resp, http.StatusUnauthorized)
	if want := `Unauthorized: invalid JWT: codeexec_network claim: network allowlist entry "bad name": not a domain name, *.domain, CIDR or address`; got["error"] != want {
		t.Errorf("malformed claim: %v", got)
	}
}

// TestNetworkEgressKeyPolicy: API keys can be given policies of their own
// (CODEEXEC_NETWORK_KEYS), narrowing the deployment's: one key reaches
// only its allowlisted name, one has the deployment's policy, and every
// other key (the "*" entry) has no network.
func TestNetworkEgressKeyPolicy(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	const narrow, wide = "key-narrow-0123456789", "key-wide-0123456789"
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{
		Policy: mustPolicy(t, "allowlist", "allowed.test,other.test"),
		Exempt: []netip.Prefix{netip.MustParsePrefix(netPublic + "/32")},
	}, func(_ *engine.Limits, a *auth.Config) {
		a.Keys = append(a.Keys, narrow, wide)
		a.KeyNetwork = map[string]string{"*": "off", auth.KeyID(narrow): "allowed.test", auth.KeyID(wide): "public"}
	})
	code := fmt.Sprintf(`
import socket, urllib.request
try:
    print(urllib.request.urlopen("http://allowed.test:%d/", timeout=5).read().decode())
except OSError as e:
    print("fetch", type(e).__name__)
try:
    socket.getaddrinfo("other.test", 80, socket.AF_INET); print("other.test resolved")
except socket.gaierror:
    print("other.test not resolved")
`, w.public)
	for _, c := range []struct {
		key, out, notes string
	}{
		{narrow, "hello from the internet\nother.test not resolved\n", "codeexec: network: DNS lookup of other.test denied (name not allowed)\n"},
		{wide, "hello from the internet\nother.test resolved\n", ""},
		{testKey, "fetch URLError\nother.test not resolved\n", ""},
	} {
		r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "py", "code": code}, "X-API-Key", c.key), http.StatusOK)
		if r.Status != "ok" || r.Stdout != c.out || r.Stderr != c.notes {
			t.Errorf("key %s: status %q\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", c.key, r.Status, r.Stdout, c.out, r.Stderr, c.notes)
		}
	}
}

// TestNetworkEgressUDP: UDP flows go through the same policy: an allowed
// destination answers, a private one is denied and said so.
func TestNetworkEgressUDP(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	w := newNetWorld(t)
	e := w.netEnv(t, egress.Config{
		Policy: mustPolicy(t, "public", ""),
		Exempt: []netip.Prefix{netip.MustParsePrefix(netPublic + "/32")},
	})
	code := fmt.Sprintf(`
import socket
for host in ("198.18.77.1", "10.213.77.1"):
    # The allowed echo may be slow on a loaded machine; the denied one
    # never answers.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(15 if host == "198.18.77.1" else 1)
    s.sendto(b"ping", (host, %d))
    try:
        print(host, s.recv(100).decode())
    except OSError as e:
        print(host, type(e).__name__)
`, w.udpEcho)
	r := e.exec(map[string]any{"lang": "py", "code": code})
	wantErr := fmt.Sprintf("codeexec: network: UDP to 10.213.77.1:%d denied (private address)\n", w.udpEcho)
	if r.Status != "ok" || r.Stdout != "198.18.77.1 echo: ping\n10.213.77.1 TimeoutError\n" || r.Stderr != wantErr {
		t.Fatalf("status %q\nstdout:\n%s\nstderr:\n%s\nwant:\n%s", r.Status, r.Stdout, r.Stderr, wantErr)
	}
}
