package pg2broker

import (
	"context"
	"testing"
)

// BenchmarkDecodeRecording decodes PostgreSQL 15's recorded workload (see
// decode_test.go): the capture's CPU per message without a server.
func BenchmarkDecodeRecording(b *testing.B) {
	msgs := readRecording(b, "v3-pg15.txt")
	names := &fakeTypeNames{asked: map[typeKey]int{}}
	b.ReportAllocs()
	for b.Loop() {
		d := newDecoder(names.name, "pgtandem_")
		for _, m := range msgs {
			if _, err := d.decode(context.Background(), m.walStart, m.data); err != nil {
				b.Fatal(err)
			}
		}
	}
}
