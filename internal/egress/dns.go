package egress

import (
	"context"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	dnsTTL  = 60
	dnsIdle = 10 * time.Second // a DNS flow without questions this long ends
)

// serveDNS answers the run's DNS queries on one flow until it is idle:
// A records for names every layer allows, from the server's resolver,
// without the addresses no run may reach; the answered addresses become
// reachable for this run. Other names answer NXDOMAIN, and there is no IPv6
// inside (AAAA answers are empty). Questions are paced (dnsPerSec).
func (r *Run) serveDNS(c net.Conn) {
	defer r.wg.Done()
	defer r.dropDNSFlow()
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(dnsIdle))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if r.dnsLim.Wait(r.ctx) != nil {
			return
		}
		if ans := r.answer(buf[:n]); ans != nil {
			c.Write(ans)
		}
	}
}

func (r *Run) answer(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return reply(h, qs, dnsmessage.RCodeFormatError, nil)
	}
	qq := qs[0]
	name := qq.Name.String()
	if qq.Class != dnsmessage.ClassINET {
		return reply(h, qs, dnsmessage.RCodeRefused, nil)
	}
	if !r.allowsName(name) {
		r.deny("DNS lookup of "+trimDot(name), ReasonDNS)
		return reply(h, qs, dnsmessage.RCodeNameError, nil)
	}
	switch qq.Type {
	case dnsmessage.TypeA:
	case dnsmessage.TypeAAAA:
		return reply(h, qs, dnsmessage.RCodeSuccess, nil)
	default:
		return reply(h, qs, dnsmessage.RCodeNotImplemented, nil)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	addrs, err := r.svc.cfg.Resolver.LookupNetIP(ctx, "ip4", trimDot(name))
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return reply(h, qs, dnsmessage.RCodeNameError, nil)
		}
		return reply(h, qs, dnsmessage.RCodeServerFailure, nil)
	}
	var ok []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		// An answer pointing inside (DNS rebinding) is left out: the code
		// sees the name fail rather than a denied connection later.
		if why := r.fixedReason(a); why != "" {
			r.deny("DNS answer "+a.String()+" for "+trimDot(name), why)
			continue
		}
		ok = append(ok, a)
	}
	r.mu.Lock()
	for _, a := range ok {
		r.resolved[a] = trimDot(name)
	}
	r.mu.Unlock()
	if len(ok) == 0 {
		return reply(h, qs, dnsmessage.RCodeNameError, nil)
	}
	return reply(h, qs, dnsmessage.RCodeSuccess, ok)
}

func trimDot(s string) string {
	if len(s) > 1 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}

func reply(h dnsmessage.Header, qs []dnsmessage.Question, rc dnsmessage.RCode, addrs []netip.Addr) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true, RCode: rc,
	})
	b.EnableCompression()
	if b.StartQuestions() != nil {
		return nil
	}
	for _, q := range qs {
		if b.Question(q) != nil {
			return nil
		}
	}
	if b.StartAnswers() != nil {
		return nil
	}
	for _, a := range addrs {
		rh := dnsmessage.ResourceHeader{Name: qs[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if b.AResource(rh, dnsmessage.AResource{A: a.As4()}) != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
