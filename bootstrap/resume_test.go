package bootstrap

import (
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"
)

// TestSortUnits: a unit is kept only when every key range of every one of
// its tables is committed in one snapshot of the current slot; a unit with
// some ranges or partitions committed is copied again from scratch.
func TestSortUnits(t *testing.T) {
	const l1, l2 = pglogrepl.LSN(0x1000), pglogrepl.LSN(0x2000)
	table := func(name, unit string) sourceTable {
		return sourceTable{schema: "public", name: name, id: "public." + name, unitSchema: "public", unitName: unit}
	}
	units := groupUnits([]sourceTable{
		table("whole", "whole"),
		table("split", "split"),
		table("half_split", "half_split"),
		table("part_a", "part"), table("part_b", "part"),
		table("mixed_a", "mixed"), table("mixed_b", "mixed"),
		table("old_slot", "old_slot"),
		table("untouched", "untouched"),
	})
	part := func(name string, i, n int, snap pglogrepl.LSN) copiedPart {
		return copiedPart{schema: "public", table: name, part: i, parts: n, snapshot: snap, rows: 10, bytes: 100}
	}
	copied := []copiedPart{
		part("whole", 0, 1, l1),
		part("split", 0, 3, l1), part("split", 1, 3, l1), part("split", 2, 3, l1),
		part("half_split", 0, 3, l1), part("half_split", 2, 3, l1),
		part("part_a", 0, 1, l2),
		part("mixed_a", 0, 1, l1), part("mixed_b", 0, 1, l2),
		part("old_slot", 0, 1, l1-0x100),
	}
	kept, partial, untouched := sortUnits(units, copied, l1)
	var keptNames []string
	for _, k := range kept {
		keptNames = append(keptNames, k.String())
	}
	if want := []string{"public.whole", "public.split"}; !slices.Equal(keptNames, want) {
		t.Errorf("kept %v, want %v", keptNames, want)
	}
	if kept[1].copies[0].Rows != 30 || kept[1].copies[0].Parts != 3 || !kept[1].copies[0].Kept {
		t.Errorf("split table kept as %+v", kept[1].copies[0])
	}
	if want := []string{"public.half_split", "public.part", "public.mixed", "public.old_slot"}; !slices.Equal(unitNames(partial), want) {
		t.Errorf("partial %v, want %v", unitNames(partial), want)
	}
	if want := []string{"public.untouched"}; !slices.Equal(unitNames(untouched), want) {
		t.Errorf("untouched %v, want %v", unitNames(untouched), want)
	}
	handoffs := tableHandoffs(l1, map[[2]string]pglogrepl.LSN{{"public", "whole"}: l1, {"public", "part"}: l2})
	if len(handoffs) != 1 || handoffs[0].Table != "part" || handoffs[0].After != l2-1 {
		t.Errorf("table handoffs %+v, want only public.part after %s", handoffs, l2-1)
	}
}
