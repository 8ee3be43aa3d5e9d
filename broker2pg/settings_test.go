package broker2pg_test

import (
	"fmt"
	"testing"

	"github.com/pgtandem/pgtandem/internal/brokertest"
	"github.com/pgtandem/pgtandem/internal/eventtest"
	"github.com/pgtandem/pgtandem/internal/pgtest"
	"github.com/pgtandem/pgtandem/internal/servicetest"
)

// TestApplyWhateverSessionDefaults: source and target have different, odd
// defaults for every setting that shapes a value's text form (server,
// database and role level), rows are written in the source's odd settings,
// and capture and apply still carry every value unchanged, both ways
// between two majors.
func TestApplyWhateverSessionDefaults(t *testing.T) {
	for _, pair := range [][2]int{{15, 17}, {17, 15}} {
		t.Run(fmt.Sprintf("pg%d-to-pg%d", pair[0], pair[1]), func(t *testing.T) {
			t.Parallel()
			testApplyWhateverSessionDefaults(t, pair[0], pair[1])
		})
	}
}

func testApplyWhateverSessionDefaults(t *testing.T, from, to int) {
	srcSrv, src := start(t, from, eventtest.OddSource.Options()...)
	dstSrv, dst := start(t, to, eventtest.OddTarget.Options()...)
	b := brokertest.Start(t)
	bothSides(t, src, dst, eventtest.SettingsSchema+`CREATE TABLE marker (n int PRIMARY KEY);`)
	eventtest.OddSource.Set(t, srcSrv)
	eventtest.OddTarget.Set(t, dstSrv)

	topic := fmt.Sprintf("persistent://public/default/settings-%d-%d", from, to)
	captureStop(t, srcSrv, "src", b.URL(), topic)
	svc, stop := servicetest.Apply(t, dstSrv, "src", "dst", b.URL(), topic)

	// A session opened now starts in the source's odd defaults.
	odd := pgtest.Connect(t, srcSrv, "postgres")
	exec(t, odd, eventtest.SettingsRows)
	waitMarker(t, src, dst, svc, 1)
	srcPinned, dstPinned := eventtest.ConnectPinned(t, srcSrv), eventtest.ConnectPinned(t, dstSrv)
	if err := eventtest.CheckSettingsValues(srcPinned, false); err != nil {
		t.Fatalf("source: %v", err)
	}
	if err := eventtest.SameRows(srcPinned, dstPinned, eventtest.SettingsTables...); err != nil {
		t.Fatal(err)
	}
	if err := eventtest.CheckSettingsValues(dstPinned, false); err != nil {
		t.Fatalf("target: %v", err)
	}

	exec(t, odd, eventtest.SettingsChanges)
	waitMarker(t, src, dst, svc, 2)
	if err := eventtest.CheckSettingsValues(srcPinned, true); err != nil {
		t.Fatalf("source: %v", err)
	}
	if err := eventtest.SameRows(srcPinned, dstPinned, eventtest.SettingsTables...); err != nil {
		t.Fatalf("after updates and deletes: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
