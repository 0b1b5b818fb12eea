// Package egress gives each networked run its own user-mode network: the
// server runs a TCP/IP stack (gVisor's netstack) on a TUN device inside the
// run's network namespace and opens, itself, only the connections the
// egress policy allows. It knows nothing of languages, storage or HTTP
// requests; the sandbox only hands it a network namespace to serve.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Mode is what a policy lets through.
type Mode string

const (
	ModeOff       Mode = "off"       // no network at all
	ModePublic    Mode = "public"    // any public address
	ModeAllowlist Mode = "allowlist" // only the listed domains and CIDRs
)

// Policy is one layer of egress rules: the deployment's, or a caller's that
// narrows it. The always-denied ranges apply whatever the policy says.
type Policy struct {
	Mode    Mode
	Domains []string       // "example.com" (exact) or "*.example.com" (any subdomain, not the apex)
	CIDRs   []netip.Prefix // allowed destination ranges (public ones; the always-denied stay denied)
}

// ParsePolicy reads a mode and a comma-separated allowlist of domains and
// CIDRs (or single addresses).
func ParsePolicy(mode, allow string) (Policy, error) {
	p := Policy{Mode: Mode(strings.ToLower(strings.TrimSpace(mode)))}
	switch p.Mode {
	case "":
		p.Mode = ModeOff
	case ModeOff, ModePublic, ModeAllowlist:
	default:
		return Policy{}, fmt.Errorf("network mode %q: want off, public or allowlist", mode)
	}
	for _, item := range strings.Split(allow, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "" {
			continue
		}
		if pfx, err := netip.ParsePrefix(item); err == nil {
			p.CIDRs = append(p.CIDRs, pfx.Masked())
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil {
			p.CIDRs = append(p.CIDRs, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		name := strings.TrimSuffix(item, ".")
		if err := checkDomain(strings.TrimPrefix(name, "*.")); err != nil {
			return Policy{}, fmt.Errorf("network allowlist entry %q: %w", item, err)
		}
		p.Domains = append(p.Domains, name)
	}
	if p.Mode == ModeAllowlist && len(p.Domains)+len(p.CIDRs) == 0 {
		return Policy{}, errors.New("network mode allowlist needs an allowlist (domains and CIDRs, comma-separated)")
	}
	return p, nil
}

func checkDomain(name string) error {
	if name == "" || len(name) > 253 || strings.Contains(name, "*") {
		return errors.New("not a domain name, *.domain, CIDR or address")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not a domain name, *.domain, CIDR or address")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errors.New("not a domain name, *.domain, CIDR or address")
			}
		}
	}
	return nil
}

// On reports whether the policy lets anything through.
func (p Policy) On() bool { return p.Mode == ModePublic || p.Mode == ModeAllowlist }

// AllowsName reports whether DNS may answer for name.
func (p Policy) AllowsName(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	switch p.Mode {
	case ModePublic:
		return true
	case ModeAllowlist:
		for _, d := range p.Domains {
			if suffix, ok := strings.CutPrefix(d, "*."); ok {
				if strings.HasSuffix(name, "."+suffix) {
					return true
				}
			} else if name == d {
				return true
			}
		}
	}
	return false
}

// allowsAddr reports whether the policy's own rules let a connection to a
// through; resolved says a was answered for a name every layer allows.
func (p Policy) allowsAddr(a netip.Addr, resolved bool) bool {
	switch p.Mode {
	case ModePublic:
		return true
	case ModeAllowlist:
		if resolved {
			return true
		}
		for _, c := range p.CIDRs {
			if c.Contains(a) {
				return true
			}
		}
	}
	return false
}

// Narrow returns the layers a run is held to: the deployment's and, when the
// caller brings one, the caller's. A caller can only narrow: a destination
// passes when every layer lets it through, so a caller's "public" under a
// deployment allowlist is still the allowlist.
func Narrow(deployment Policy, caller *Policy) []Policy {
	if caller == nil {
		return []Policy{deployment}
	}
	return []Policy{deployment, *caller}
}

// Reasons a connection is denied, also the metric's label values.
const (
	ReasonLoopback  = "loopback"
	ReasonLinkLocal = "link-local"
	ReasonPrivate   = "private address"
	ReasonMetadata  = "metadata address"
	ReasonSpecial   = "special-purpose address"
	ReasonMulticast = "multicast"
	ReasonHost      = "this host's address"
	ReasonPolicy    = "not allowed by policy"
	ReasonConnLimit = "connection limit"
	ReasonSNI       = "TLS server name not allowed"
	ReasonHTTPHost  = "HTTP host not allowed"
	ReasonDNS       = "name not allowed"
)

// alwaysDenied are ranges no policy opens: the host itself, the networks
// around it, the cloud metadata endpoints, and addresses that are not
// destinations at all.
var alwaysDenied = []struct {
	pfx    netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("169.254.169.254/32"), ReasonMetadata},
	{netip.MustParsePrefix("fd00:ec2::254/128"), ReasonMetadata},
	{netip.MustParsePrefix("0.0.0.0/8"), ReasonSpecial},
	{netip.MustParsePrefix("127.0.0.0/8"), ReasonLoopback},
	{netip.MustParsePrefix("::1/128"), ReasonLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), ReasonLinkLocal},
	{netip.MustParsePrefix("fe80::/10"), ReasonLinkLocal},
	{netip.MustParsePrefix("10.0.0.0/8"), ReasonPrivate},
	{netip.MustParsePrefix("172.16.0.0/12"), ReasonPrivate},
	{netip.MustParsePrefix("192.168.0.0/16"), ReasonPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), ReasonPrivate}, // carrier-grade NAT, also cloud-internal
	{netip.MustParsePrefix("fc00::/7"), ReasonPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), ReasonSpecial},
	{netip.MustParsePrefix("192.0.2.0/24"), ReasonSpecial},
	{netip.MustParsePrefix("198.18.0.0/15"), ReasonSpecial},
	{netip.MustParsePrefix("198.51.100.0/24"), ReasonSpecial},
	{netip.MustParsePrefix("203.0.113.0/24"), ReasonSpecial},
	{netip.MustParsePrefix("240.0.0.0/4"), ReasonSpecial}, // reserved and broadcast
	{netip.MustParsePrefix("224.0.0.0/4"), ReasonMulticast},
	{netip.MustParsePrefix("ff00::/8"), ReasonMulticast},
	{netip.MustParsePrefix("::/128"), ReasonSpecial},
	{netip.MustParsePrefix("64:ff9b::/96"), ReasonSpecial}, // NAT64 would map to any IPv4, private included
	{netip.MustParsePrefix("2001:db8::/32"), ReasonSpecial},
}

// DeniedReason says why a is never a destination, or "" when it may be one.
// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
func DeniedReason(a netip.Addr) string {
	a = a.Unmap()
	if !a.IsValid() {
		return ReasonSpecial
	}
	for _, d := range alwaysDenied {
		if d.pfx.Contains(a) {
			return d.reason
		}
	}
	return ""
}

// ParseCaller reads a caller's policy as a JWT claim carries it: "off",
// "public", or an allowlist (domains and CIDRs, comma-separated).
func ParseCaller(v string) (Policy, error) {
	switch m := strings.ToLower(strings.TrimSpace(v)); m {
	case "", "off":
		return Policy{Mode: ModeOff}, nil
	case "public":
		return Policy{Mode: ModePublic}, nil
	}
	return ParsePolicy(string(ModeAllowlist), v)
}
