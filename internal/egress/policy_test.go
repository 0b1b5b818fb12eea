package egress

import (
	"context"
	"golang.org/x/net/dns/dnsmessage"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("Allowlist", " pypi.org, *.pythonhosted.org ,203.0.113.7, 8.8.8.0/24,2001:4860::/32,Example.COM.")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeAllowlist || strings.Join(p.Domains, " ") != "pypi.org *.pythonhosted.org example.com" {
		t.Fatalf("mode %q domains %q", p.Mode, p.Domains)
	}
	var cidrs []string
	for _, c := range p.CIDRs {
		cidrs = append(cidrs, c.String())
	}
	if strings.Join(cidrs, " ") != "203.0.113.7/32 8.8.8.0/24 2001:4860::/32" {
		t.Fatalf("cidrs %q", cidrs)
	}
	for _, bad := range []struct{ mode, allow, err string }{
		{"open", "", `network mode "open": want off, public or allowlist`},
		{"allowlist", " , ", "network mode allowlist needs an allowlist (domains and CIDRs, comma-separated)"},
		{"allowlist", "a*.example.com", `network allowlist entry "a*.example.com": not a domain name, *.domain, CIDR or address`},
		{"allowlist", "exa mple.com", `network allowlist entry "exa mple.com": not a domain name, *.domain, CIDR or address`},
		{"allowlist", "a..b", `network allowlist entry "a..b": not a domain name, *.domain, CIDR or address`},
	} {
		if _, err := ParsePolicy(bad.mode, bad.allow); err == nil || err.Error() != bad.err {
			t.Errorf("ParsePolicy(%q, %q) = %v, want %s", bad.mode, bad.allow, err, bad.err)
		}
	}
	if p, err := ParsePolicy("", ""); err != nil || p.On() {
		t.Fatalf("empty mode: %+v %v, want off", p, err)
	}
}

func TestAllowsName(t *testing.T) {
	p, _ := ParsePolicy("allowlist", "pypi.org,*.pythonhosted.org")
	for name, want := range map[string]bool{
		"pypi.org": true, "PyPI.org.": true, "files.pythonhosted.org": true, "a.b.pythonhosted.org": true,
		"pythonhosted.org": false, "evilpypi.org": false, "pypi.org.evil.com": false, "xpythonhosted.org": false, "": false,
	} {
		if got := p.AllowsName(name); got != want {
			t.Errorf("AllowsName(%q) = %v, want %v", name, got, want)
		}
	}
	if !(Policy{Mode: ModePublic}).AllowsName("anything.example") || (Policy{Mode: ModeOff}).AllowsName("pypi.org") {
		t.Fatal("public must allow every name, off none")
	}
}

func TestDeniedReason(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1": ReasonLoopback, "127.9.9.9": ReasonLoopback, "::1": ReasonLoopback, "::ffff:127.0.0.1": ReasonLoopback,
		"169.254.169.254": ReasonMetadata, "fd00:ec2::254": ReasonMetadata, "169.254.1.1": ReasonLinkLocal, "fe80::1": ReasonLinkLocal,
		"10.1.2.3": ReasonPrivate, "172.16.0.1": ReasonPrivate, "172.31.255.255": ReasonPrivate, "192.168.1.1": ReasonPrivate,
		"100.64.0.1": ReasonPrivate, "fd12::1": ReasonPrivate, "fc00::1": ReasonPrivate, "::ffff:10.0.0.1": ReasonPrivate,
		"224.0.0.1": ReasonMulticast, "ff02::1": ReasonMulticast, "0.0.0.0": ReasonSpecial, "::": ReasonSpecial,
		"255.255.255.255": ReasonSpecial, "198.18.0.1": ReasonSpecial, "64:ff9b::a00:1": ReasonSpecial,
		"8.8.8.8": "", "172.32.0.1": "", "100.128.0.1": "", "2606:4700::1111": "", "1.1.1.1": "",
	} {
		if got := DeniedReason(netip.MustParseAddr(addr)); got != want {
			t.Errorf("DeniedReason(%s) = %q, want %q", addr, got, want)
		}
	}
}

// A run's decisions: the always-denied ranges win over any policy, an
// allowlist opens its CIDRs and the addresses its names resolved to, and a
// caller's policy narrows the deployment's, never widens it.
func TestRunDecide(t *testing.T) {
	dep, _ := ParsePolicy("allowlist", "pypi.org,8.8.8.0/24,10.0.0.0/8")
	svc := New(Config{Policy: dep})
	r := svc.NewRun(nil)
	for addr, want := range map[string]string{
		"8.8.8.8": "", "8.8.4.4": ReasonPolicy, "10.1.1.1": ReasonPrivate, "151.101.0.223": ReasonPolicy,
		"169.254.169.254": ReasonMetadata,
	} {
		if got := r.decide(netip.MustParseAddr(addr)); got != want {
			t.Errorf("decide(%s) = %q, want %q", addr, got, want)
		}
	}
	r.resolved[netip.MustParseAddr("151.101.0.223")] = "pypi.org"
	if got := r.decide(netip.MustParseAddr("151.101.0.223")); got != "" {
		t.Errorf("a resolved address of an allowed name: %q", got)
	}
	// A caller asking for public under an allowlist deployment gets the allowlist.
	pub := Policy{Mode: ModePublic}
	if got := svc.NewRun(&pub).decide(netip.MustParseAddr("1.1.1.1")); got != ReasonPolicy {
		t.Errorf("caller public under deployment allowlist: %q, want %q", got, ReasonPolicy)
	}
	// A caller's allowlist narrows a public deployment.
	narrow, _ := ParseCaller("8.8.8.8")
	rc := New(Config{Policy: pub}).NewRun(&narrow)
	if got := rc.decide(netip.MustParseAddr("8.8.8.8")); got != "" {
		t.Errorf("caller's CIDR: %q", got)
	}
	if got := rc.decide(netip.MustParseAddr("1.1.1.1")); got != ReasonPolicy {
		t.Errorf("outside the caller's allowlist: %q", got)
	}
	if rc.allowsName("pypi.org") {
		t.Error("caller without domains: no name resolves")
	}
	// The host's own addresses are denied whatever the policy.
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.(*net.IPNet).IP)
		if got := New(Config{Policy: pub}).NewRun(nil).decide(ip.Unmap()); got == "" {
			t.Errorf("this host's address %s is not denied", ip)
		}
	}
}

// A name off the allowlist is NXDOMAIN, and said so, without asking the
// upstream (which fails the lookup here). Allowed names and rebinding
// answers are in the API's network tests.
func TestRunDNSAnswer(t *testing.T) {
	dep, _ := ParsePolicy("allowlist", "*.example.org")
	svc := New(Config{Policy: dep, Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return nil, &net.DNSError{Err: "no upstream in this test", IsNotFound: true}
	}}})
	r := svc.NewRun(nil)
	q := query(t, "evil.test.")
	ans := r.answer(q)
	if len(ans) < 4 || ans[3]&0x0f != 3 { // RCODE NXDOMAIN
		t.Fatalf("denied name answered %x", ans)
	}
	if r.Notes() != "codeexec: network: DNS lookup of evil.test denied (name not allowed)\n" {
		t.Fatalf("notes %q", r.Notes())
	}
}

func query(t *testing.T, name string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A run's open DNS flows are bounded; a closed one frees its place.
func TestDNSFlowCap(t *testing.T) {
	r := New(Config{Policy: Policy{Mode: ModePublic}}).NewRun(nil)
	for i := range maxDNSFlows {
		if !r.takeDNSFlow() {
			t.Fatalf("flow %d refused", i)
		}
	}
	if r.takeDNSFlow() {
		t.Fatal("a flow past the cap was let through")
	}
	r.dropDNSFlow()
	if !r.takeDNSFlow() {
		t.Fatal("a freed place was not reused")
	}
}
