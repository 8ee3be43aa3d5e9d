package pg2broker

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/pgtandem/pgtandem/event"
)

// recordedRowMessages are the Insert, Update and Delete messages of every
// recording.
func recordedRowMessages(t testing.TB) [][]byte {
	var out [][]byte
	for _, name := range []string{"v1-pg13.txt", "v2-pg14.txt", "v3-pg15.txt", "v4-pg16.txt", "v4-pg17.txt"} {
		for _, m := range readRecording(t, name) {
			if isRowMessage(m.data) {
				out = append(out, m.data)
			}
		}
	}
	return out
}

// TestParseRowMessageTruncated: every recorded row message parses whole,
// and each of its prefixes is an error, not a panic or a shorter tuple.
func TestParseRowMessageTruncated(t *testing.T) {
	msgs := recordedRowMessages(t)
	if len(msgs) < 20 {
		t.Fatalf("%d recorded row messages", len(msgs))
	}
	for _, data := range msgs {
		m, err := parseRowMessage(data)
		if err != nil {
			t.Fatalf("recorded %q message: %v", data[0], err)
		}
		if (m.new == nil) != (data[0] == 'D') || (m.old == nil && data[0] == 'D') {
			t.Fatalf("recorded %q message parsed as %+v", data[0], m)
		}
		for n := 1; n < len(data); n++ {
			if _, err := parseRowMessage(data[:n]); err == nil {
				t.Fatalf("%q message cut to %d of %d bytes parsed without error", data[0], n, len(data))
			}
		}
		if _, err := parseRowMessage(append(data[:len(data):len(data)], 0)); err == nil || !strings.Contains(err.Error(), "after its tuples") {
			t.Fatalf("%q message with a byte more: %v", data[0], err)
		}
	}
}

// FuzzParseRowMessage: no input makes the row message parser or the tuple
// reader panic, and a tuple it accepts has the length it said.
func FuzzParseRowMessage(f *testing.F) {
	for _, data := range recordedRowMessages(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !isRowMessage(data) {
			return
		}
		m, err := parseRowMessage(data)
		if err != nil {
			return
		}
		for _, tuple := range [][]byte{m.old, m.new} {
			if tuple == nil {
				continue
			}
			cols := int(binary.BigEndian.Uint16(tuple))
			rel := &relation{schema: "s", table: "t"}
			for i := range cols {
				rel.columns = append(rel.columns, event.Column{Name: fmt.Sprint("c", i), Type: "text", Key: i == 0})
			}
			_, _, _ = tupleValues(rel, tuple, false)
			_, _, _ = tupleValues(rel, tuple, true)
		}
	})
}
