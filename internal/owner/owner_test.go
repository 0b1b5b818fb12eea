package owner

import "testing"

func TestVisible(t *testing.T) {
	alice, bob := JWT("t", "alice"), JWT("t", "bob")
	k1, k2 := Key([]byte{1}), Key([]byte{2})
	// The old encoding's collision: tenant "a:b" + sub "c" and tenant "a" +
	// sub "b:c" were both "a:b:c"; now they differ.
	if JWT("a:b", "c") == JWT("a", "b:c") {
		t.Fatal("ambiguous encoding")
	}
	cases := []struct {
		obj, caller string
		want        bool
	}{
		{alice, alice, true}, {alice, bob, false}, {alice, k1, false}, {alice, Anonymous, false},
		{k1, k1, true}, {k1, k2, false}, {k1, alice, false}, {k1, Anonymous, false},
		{Anonymous, Anonymous, true}, {Anonymous, k1, false}, {Anonymous, alice, false},
		// Legacy unowned objects: the credential classes that stored them.
		{"", k1, true}, {"", Anonymous, true}, {"", alice, false},
		// Legacy JWT owners: that subject only, and only when unambiguous.
		{"t:alice", alice, true}, {"t:alice", bob, false}, {"t:alice", k1, false},
		{"a:b:c", JWT("a:b", "c"), false}, {"a:b:c", JWT("a", "b:c"), false},
		// The server's own work.
		{alice, "", true},
	}
	for _, c := range cases {
		if got := Visible(c.obj, c.caller); got != c.want {
			t.Errorf("Visible(%q, %q) = %v, want %v", c.obj, c.caller, got, c.want)
		}
	}
}

func TestSharedTenantFiles(t *testing.T) {
	alice, bob, eve := JWT("t", "alice"), JWT("t", "bob"), JWT("u", "alice")
	k1, k2 := Key([]byte{1}), Key([]byte{2})
	shared := Shared(alice)
	if shared == alice || Payer(shared) != alice || Payer(alice) != alice {
		t.Fatalf("Shared(%q) = %q, Payer %q", alice, shared, Payer(shared))
	}
	// Keys and anonymous callers share by credential already.
	if Shared(k1) != k1 || Shared(Anonymous) != Anonymous || Payer(k1) != k1 {
		t.Fatal("a key's or anonymous owner changed")
	}
	// An empty tenant is a tenant like any other.
	if none := JWT("", "bob"); Payer(Shared(none)) != none || !Readable(Shared(none), JWT("", "carol")) || Readable(Shared(none), bob) {
		t.Fatalf("empty tenant: %q", Shared(none))
	}
	cases := []struct {
		obj, caller  string
		read, manage bool
	}{
		{shared, alice, true, true}, {shared, bob, true, false},
		{shared, eve, false, false}, {shared, k1, false, false}, {shared, Anonymous, false, false},
		{Shared(JWT("t:x", "y")), JWT("t", "x:y"), false, false},
		{alice, bob, false, false}, {k1, k2, false, false}, {Shared(k1), k1, true, true}, {Shared(k1), k2, false, false},
		{"", bob, false, false}, {"t:alice", bob, false, false},
		{shared, "", true, true},
	}
	for _, c := range cases {
		if got := Readable(c.obj, c.caller); got != c.read {
			t.Errorf("Readable(%q, %q) = %v, want %v", c.obj, c.caller, got, c.read)
		}
		if got := Visible(c.obj, c.caller); got != c.manage {
			t.Errorf("Visible(%q, %q) = %v, want %v", c.obj, c.caller, got, c.manage)
		}
	}
}
