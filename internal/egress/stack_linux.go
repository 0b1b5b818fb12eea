//go:build linux

package egress

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	nicID       = 1
	dialTimeout = 10 * time.Second
	udpIdle     = 30 * time.Second
	helloWait   = 10 * time.Second
)

// Attach serves the run's network from the namespace at nsPath: it must be
// called before the run's code starts, once.
func (r *Run) Attach(nsPath string) error {
	tun, err := openTUN(nsPath)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	fail := func(what string, e tcpip.Error) error {
		s.Destroy()
		tun.Close()
		return fmt.Errorf("network: %s: %s", what, e)
	}
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{int(tun.Fd())}, MTU: MTU, PacketDispatchMode: fdbased.Readv})
	if err != nil {
		s.Destroy()
		tun.Close()
		return fmt.Errorf("network: link endpoint: %w", err)
	}
	// The handlers are in place before the NIC starts reading the device.
	tf := tcp.NewForwarder(s, 0, 256, r.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, r.forwardUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	if e := s.CreateNIC(nicID, ep); e != nil {
		return fail("nic", e)
	}
	// Promiscuous and spoofing: the stack takes every destination the run
	// sends to as its own, so that the forwarders see each connection.
	if e := s.SetPromiscuousMode(nicID, true); e != nil {
		return fail("promiscuous", e)
	}
	if e := s.SetSpoofing(nicID, true); e != nil {
		return fail("spoofing", e)
	}
	gw := tcpip.AddrFrom4(GatewayAddr.As4())
	if e := s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: gw.WithPrefix()}, stack.AddressProperties{}); e != nil {
		return fail("address", e)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	if !r.onClose(func() {
		s.RemoveNIC(nicID) // stops the device's reader
		s.Destroy()
		tun.Close()
	}) {
		s.RemoveNIC(nicID)
		s.Destroy()
		tun.Close()
		return errors.New("network: run closed")
	}
	return nil
}

// track closes c when the run closes, and counts its goroutine.
func (r *Run) track(c io.Closer) bool {
	r.wg.Add(1)
	if !r.onClose(func() { c.Close() }) {
		r.wg.Done()
		c.Close()
		return false
	}
	return true
}

// trackPair tracks a flow's two ends, or closes both when the run is
// closing.
func (r *Run) trackPair(in, out io.Closer) bool {
	if !r.track(in) {
		out.Close()
		return false
	}
	if !r.track(out) {
		r.wg.Done()
		in.Close()
		return false
	}
	return true
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// dialer dials out from the server, re-checking the address it really
// connects to: the policy decided on the same address, this is the last
// word in case anything in between rewrote it.
func (r *Run) dialer() *net.Dialer {
	return &net.Dialer{
		Timeout: dialTimeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if why := r.decide(ap.Addr()); why != "" {
				return fmt.Errorf("denied: %s", why)
			}
			return nil
		},
	}
}

func (r *Run) forwardTCP(req *tcp.ForwarderRequest) {
	id := req.ID()
	dst := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	what := "connection to " + dst.String()
	if why := r.decide(dst.Addr()); why != "" {
		r.deny(what, why)
		req.Complete(true)
		return
	}
	if !r.takeConn() {
		r.deny(what, ReasonConnLimit)
		req.Complete(true)
		return
	}
	// Dial first, so that a refused or unreachable destination is a reset
	// to the code, as it would be on a real network.
	out, err := r.dialer().DialContext(r.ctx, "tcp", dst.String())
	if err != nil {
		req.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		out.Close()
		req.Complete(true)
		return
	}
	req.Complete(false)
	in := gonet.NewTCPConn(&wq, ep)
	if !r.trackPair(in, out) {
		return
	}
	go r.spliceTCP(in, out.(*net.TCPConn), dst)
}

// spliceTCP copies both ways under the run's byte rate. On a destination
// allowed only by a DNS answer (an allowlisted domain, whose address may be
// shared with other sites, e.g. a CDN's), a TLS connection must name an
// allowed server in its ClientHello, and every plain HTTP request must
// name one in its Host; other protocols pass.
func (r *Run) spliceTCP(in *gonet.TCPConn, out *net.TCPConn, dst netip.AddrPort) {
	defer r.wg.Done()
	defer r.wg.Done()
	defer in.Close()
	defer out.Close()
	done := make(chan struct{}, 2)
	// The server's bytes flow at once (a server that speaks first, such
	// as SMTP's, is not held up); the code's only once they are checked.
	go func() {
		r.copy(in, out)
		in.CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		r.upstream(in, out, dst)
		out.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// upstream moves the code's bytes out; on a destination allowed only by a
// DNS answer, after checking the TLS server name or each HTTP request's
// Host. A denied TLS hello closes the connection both ways.
func (r *Run) upstream(in *gonet.TCPConn, out *net.TCPConn, dst netip.AddrPort) {
	if !r.needsSNI(dst.Addr()) {
		r.copy(out, in)
		return
	}
	br := bufio.NewReaderSize(in, 17<<10) // a whole TLS record and its header
	in.SetReadDeadline(time.Now().Add(helloWait))
	head, _ := br.Peek(8)
	in.SetReadDeadline(time.Time{})
	switch {
	case len(head) >= 1 && head[0] == 0x16: // a TLS handshake record
		name := peekSNI(br)
		if name == "" || !r.allowsName(name) {
			r.deny(fmt.Sprintf("TLS connection to %s (server name %q)", dst, name), ReasonSNI)
			in.Close()
			out.Close()
			return
		}
		r.copy(out, br)
	case looksHTTP(head):
		// A denied request ends the code's side only: what the server
		// owes for the requests before it still comes back.
		r.copyHTTP(out, br, dst)
	default:
		r.copy(out, br)
	}
}

// looksHTTP reports whether a stream starts like an HTTP/1 request.
func looksHTTP(head []byte) bool {
	for _, m := range []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "} {
		if bytes.HasPrefix(head, []byte(m)) || (len(head) < len(m) && bytes.HasPrefix([]byte(m), head) && len(head) > 0) {
			return true
		}
	}
	return false
}

// copyHTTP forwards the code's HTTP/1 requests one by one, each only when
// its Host (or absolute URL) is an allowed name; the first that is not
// ends the connection. A protocol upgrade (WebSocket) is passed through
// after its allowed request.
func (r *Run) copyHTTP(out net.Conn, br *bufio.Reader, dst netip.AddrPort) {
	w := rateWriter{r: r, w: out}
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		host := req.Host
		if req.URL != nil && req.URL.Host != "" {
			host = req.URL.Host
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || !r.allowsName(host) {
			r.deny(fmt.Sprintf("HTTP request to %s (host %q)", dst, host), ReasonHTTPHost)
			return
		}
		upgrade := req.Header.Get("Upgrade") != ""
		if err := req.Write(w); err != nil {
			return
		}
		if upgrade {
			r.copy(out, br)
			return
		}
	}
}

// rateWriter writes under the run's byte rate.
type rateWriter struct {
	r *Run
	w io.Writer
}

func (rw rateWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), 32<<10)]
		if err := rw.r.lim.WaitN(rw.r.ctx, len(chunk)); err != nil {
			return n, err
		}
		m, err := rw.w.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
		b = b[len(chunk):]
	}
	return n, nil
}

// needsSNI reports whether a is reachable only through an allowlisted
// name's DNS answer: no layer opens it by mode or CIDR alone.
func (r *Run) needsSNI(a netip.Addr) bool {
	for _, l := range r.layers {
		if !l.allowsAddr(a, false) {
			return true
		}
	}
	return false
}

// peekSNI reads the server name of the ClientHello at the head of br
// without consuming it ("" when there is none or it cannot be parsed).
func peekSNI(br *bufio.Reader) string {
	hdr, err := br.Peek(5)
	if err != nil {
		return ""
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	rec, err := br.Peek(5 + n)
	if err != nil {
		return ""
	}
	var name string
	// crypto/tls parses the hello; the callback takes the name and stops
	// the handshake before anything is written back.
	stop := errors.New("stop")
	conn := tls.Server(helloConn{r: bytes.NewReader(rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name = h.ServerName
			return nil, stop
		},
	})
	_ = conn.Handshake()
	return name
}

// helloConn is a read-only net.Conn over the bytes of a ClientHello.
type helloConn struct {
	net.Conn
	r io.Reader
}

func (c helloConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c helloConn) Write(b []byte) (int, error) { return len(b), nil }
func (helloConn) Close() error                  { return nil }
func (helloConn) SetDeadline(time.Time) error   { return nil }
func (helloConn) SetReadDeadline(time.Time) error {
	return nil
}
func (helloConn) SetWriteDeadline(time.Time) error { return nil }

// copy moves bytes from src to dst under the run's rate limit.
func (r *Run) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if r.lim.WaitN(r.ctx, n) != nil {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *Run) forwardUDP(req *udp.ForwarderRequest) {
	id := req.ID()
	dst := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	if dst.Addr() == GatewayAddr && dst.Port() == 53 {
		if !r.takeDNSFlow() {
			return // dropped: the resolver retries or gives up
		}
		var wq waiter.Queue
		ep, terr := req.CreateEndpoint(&wq)
		if terr != nil {
			r.dropDNSFlow()
			return
		}
		c := gonet.NewUDPConn(&wq, ep)
		if r.track(c) {
			go r.serveDNS(c)
		} else {
			r.dropDNSFlow()
		}
		return
	}
	what := "UDP to " + dst.String()
	if why := r.decide(dst.Addr()); why != "" {
		r.deny(what, why)
		return
	}
	if !r.takeConn() {
		r.deny(what, ReasonConnLimit)
		return
	}
	out, err := r.dialer().DialContext(r.ctx, "udp", dst.String())
	if err != nil {
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		out.Close()
		return
	}
	in := gonet.NewUDPConn(&wq, ep)
	if !r.trackPair(in, out) {
		return
	}
	go r.relayUDP(in, out)
}

// relayUDP moves datagrams both ways until the flow is idle.
func (r *Run) relayUDP(in *gonet.UDPConn, out net.Conn) {
	defer r.wg.Done()
	defer r.wg.Done()
	defer in.Close()
	defer out.Close()
	var once sync.Once
	stop := func() { once.Do(func() { in.Close(); out.Close() }) }
	pump := func(dst, src net.Conn) {
		defer stop()
		buf := make([]byte, 64<<10)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdle))
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			if r.lim.WaitN(r.ctx, n) != nil {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go pump(out, in)
	pump(in, out)
}
