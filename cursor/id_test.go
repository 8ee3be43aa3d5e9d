package cursor

import (
	"errors"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
)

func TestParseID(t *testing.T) {
	for _, tc := range []struct {
		text string
		want ID
	}{
		{"12:5:-1", ID{Ledger: 12, Entry: 5, Partition: -1, BatchIndex: -1, FirstLedger: 12, FirstEntry: 5}},
		{"3:0:0", ID{Ledger: 3, Entry: 0, Partition: 0, BatchIndex: -1, FirstLedger: 3, FirstEntry: 0}},
		{"3:0:0:4", ID{Ledger: 3, Entry: 0, Partition: 0, BatchIndex: 4, FirstLedger: 3, FirstEntry: 0}},
		{"7:10:-1;8:2:-1", ID{Ledger: 8, Entry: 2, Partition: -1, BatchIndex: -1, FirstLedger: 7, FirstEntry: 10}},
	} {
		got, err := ParseID(tc.text)
		if err != nil || got != tc.want {
			t.Fatalf("ParseID(%q) = %+v, %v; want %+v", tc.text, got, err, tc.want)
		}
		if got.String() != tc.text {
			t.Fatalf("String() = %q, want %q", got.String(), tc.text)
		}
	}
	for _, bad := range []string{"", "12:5", "a:b:c", "1:2:3:4:5", "1:2:3:-2", "1:2:x", "1:2:-1;", ";1:2:-1", "1:2:-1:0;1:3:-1"} {
		var ie *IDError
		if _, err := ParseID(bad); !errors.As(err, &ie) {
			t.Fatalf("ParseID(%q): %v, want an *IDError", bad, err)
		}
	}
}

// TestIDOfPulsar: the ids pulsar-client-go prints read back to the same
// place, so that what pgtandem stores compares with what a consumer gets.
func TestIDOfPulsar(t *testing.T) {
	id := IDOf(pulsar.NewMessageID(41, 7, -1, -1))
	if id.Ledger != 41 || id.Entry != 7 || id.BatchIndex != -1 || id.FirstLedger != 41 || id.FirstEntry != 7 {
		t.Fatalf("IDOf = %+v", id)
	}
	// Messages of one batch share their entry: the batch index tells them
	// apart, though MessageID.String leaves it out.
	second := IDOf(pulsar.NewMessageID(41, 8, 1, -1))
	if second.BatchIndex != 1 || second.String() != "41:8:-1:1" || !second.After(IDOf(pulsar.NewMessageID(41, 8, 0, -1))) {
		t.Fatalf("IDOf(batch index 1) = %+v", second)
	}
	back := id.Pulsar()
	if back.LedgerID() != 41 || back.EntryID() != 7 {
		t.Fatalf("Pulsar() = %v", back)
	}
}

func TestIDAfter(t *testing.T) {
	a, _ := ParseID("5:9:-1")
	for _, tc := range []struct {
		other string
		after bool
	}{{"5:8:-1", true}, {"5:9:-1", false}, {"5:10:-1", false}, {"4:100:-1", true}, {"6:0:-1", false}, {"3:1:-1;5:8:-1", true}, {"5:9:-1:0", false}, {"5:8:-1:7", true}} {
		o, _ := ParseID(tc.other)
		if got := a.After(o); got != tc.after {
			t.Fatalf("5:9 after %s = %v, want %v", tc.other, got, tc.after)
		}
	}
}

func TestParsePosition(t *testing.T) {
	p, err := ParsePosition("old/12:5:-1")
	if err != nil || p != (Position{Cluster: "old", MessageID: "12:5:-1"}) || p.String() != "old/12:5:-1" {
		t.Fatalf("ParsePosition = %+v, %v", p, err)
	}
	if p, err := ParsePosition("new/"); err != nil || p != (Position{Cluster: "new"}) {
		t.Fatalf("ParsePosition(new/) = %+v, %v", p, err)
	}
	for _, bad := range []string{"", "old", "/1:2:-1", "old/1:2"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Fatalf("ParsePosition(%q) accepted", bad)
		}
	}
}

// TestEntriesBetween counts across ledgers as Apache Pulsar lists them,
// the open ledger last with its entries not yet known.
func TestEntriesBetween(t *testing.T) {
	ledgers := []utils.LedgerInfo{{LedgerID: 3, Entries: 10}, {LedgerID: 4, Entries: 5}, {LedgerID: 7, Entries: 0}}
	id := func(s string) ID { v, _ := ParseID(s); return v }
	for _, tc := range []struct {
		from, to string
		want     int64
	}{
		{"3:2:-1", "3:5:-1", 3},
		{"3:9:-1", "4:0:-1", 1},
		{"3:7:-1", "7:1:-1", 2 + 5 + 2},
		{"4:4:-1", "4:4:-1", 0},
		{"7:3:-1", "4:1:-1", 0},
		{"3:-1:-1", "3:9:-1", 10},
	} {
		if got := entriesBetween(ledgers, id(tc.from), id(tc.to)); got != tc.want {
			t.Fatalf("entriesBetween(%s, %s) = %d, want %d", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	client, err := pulsar.NewClient(pulsar.ClientOptions{URL: "pulsar://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	good := func() Config {
		return Config{Client: client, Topics: map[string]string{"old": "a", "new": "b"}, Subscription: "s", Start: Position{Cluster: "old"}}
	}
	if c := good(); c.Validate() != nil {
		t.Fatal(c.Validate())
	}
	for name, change := range map[string]func(*Config){
		"Client":       func(c *Config) { c.Client = nil },
		"Topics":       func(c *Config) { c.Topics = nil },
		"Subscription": func(c *Config) { c.Subscription = "" },
		"Start":        func(c *Config) { c.Start.Cluster = "other" },
	} {
		c := good()
		change(&c)
		var ce *ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != name {
			t.Fatalf("%s: %v, want a *ConfigError on it", name, err)
		}
	}
	c := good()
	c.Start.MessageID = "nope"
	var ce *ConfigError
	if err := c.Validate(); !errors.As(err, &ce) || ce.Field != "Start" {
		t.Fatalf("bad start id: %v", err)
	}
}
