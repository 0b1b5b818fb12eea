//go:build linux

package egress

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ifName is the run's interface inside its namespace.
const ifName = "eth0"

// openTUN creates the run's TUN device inside the network namespace at
// nsPath (e.g. /proc/<pid>/ns/net), gives it SandboxAddr with a default
// route through GatewayAddr, brings it and lo up, and returns the device's
// fd, which stays in the server. It runs on a thread of its own that enters
// the namespace; the thread returns to the server's namespace, or is thrown
// away when it cannot.
func openTUN(nsPath string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, restored, err := openTUNLocked(nsPath)
		if restored {
			runtime.UnlockOSThread()
		} // else the goroutine ends locked and its thread is destroyed
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

func openTUNLocked(nsPath string) (tun *os.File, restored bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter the run's network namespace: %w", err)
	}
	defer func() {
		restored = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil
		if !restored && tun != nil {
			tun.Close()
			tun, err = nil, fmt.Errorf("could not return to the server's network namespace")
		}
	}()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(ifName)
	if err != nil {
		unix.Close(fd)
		return nil, false, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, false, fmt.Errorf("create TUN device: %w", err)
	}
	tun = os.NewFile(uintptr(fd), "tun")
	if err := configure(); err != nil {
		tun.Close()
		return nil, false, err
	}
	return tun, false, nil
}

// configure sets up the interfaces of the namespace the thread is in.
func configure() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("%s: %w", ifName, err)
	}
	if err := netlink.LinkSetMTU(link, MTU); err != nil {
		return fmt.Errorf("%s mtu: %w", ifName, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: SandboxAddr.AsSlice(), Mask: net.CIDRMask(SandboxPrefixLen, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("%s address: %w", ifName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up: %w", ifName, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: GatewayAddr.AsSlice()}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}
