//go:build linux

package egress

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// peekSNI reads the server name of a real ClientHello without consuming it.
func TestPeekSNI(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go func() {
		tls.Client(c1, &tls.Config{ServerName: "files.example.org"}).Handshake()
	}()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(c2, 17<<10)
	if got := peekSNI(br); got != "files.example.org" {
		t.Fatalf("peekSNI = %q", got)
	}
	head, _ := br.Peek(1)
	if !bytes.Equal(head, []byte{0x16}) {
		t.Fatalf("the hello was consumed: %x", head)
	}
}
