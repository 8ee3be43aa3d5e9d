package cursor

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/apache/pulsar-client-go/pulsar"
)

// ID is a message's place in one non-partitioned topic. Its text form is
// what pulsar-client-go prints (MessageID.String), "ledger:entry:partition",
// plus ":batch" for a message of a batch (which String leaves out: the
// messages of one batch share an entry), and for a chunked message "first
// chunk;last chunk". It is what pgtandem stores (cursor rows) and what a
// [Position] holds; ids stored without the batch index
// (apply_progress.message_id) read as the entry's.
type ID struct {
	Ledger, Entry int64
	Partition     int32
	// BatchIndex is the index in its batch, -1 for a message sent alone.
	BatchIndex int32
	// FirstLedger and FirstEntry are the first chunk's of a chunked message,
	// the same as Ledger and Entry otherwise: a seek goes there.
	FirstLedger, FirstEntry int64
}

// IDError reports text that is not a message id.
type IDError struct {
	Text string
}

func (e *IDError) Error() string {
	return fmt.Sprintf("%q is not a Pulsar message id (ledger:entry:partition, as pulsar-client-go prints it)", e.Text)
}

// ParseID reads an id from its text form; errors are *IDError.
func ParseID(s string) (ID, error) {
	first, last, chunked := strings.Cut(s, ";")
	if !chunked {
		last = first
	}
	id, err := parseOne(last)
	if err != nil {
		return ID{}, &IDError{Text: s}
	}
	id.FirstLedger, id.FirstEntry = id.Ledger, id.Entry
	if chunked {
		f, err := parseOne(first)
		if err != nil || f.BatchIndex >= 0 || id.BatchIndex >= 0 {
			return ID{}, &IDError{Text: s}
		}
		id.FirstLedger, id.FirstEntry = f.Ledger, f.Entry
	}
	return id, nil
}

func parseOne(s string) (ID, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 && len(parts) != 4 {
		return ID{}, strconv.ErrSyntax
	}
	var n [4]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return ID{}, err
		}
		n[i] = v
	}
	id := ID{Ledger: n[0], Entry: n[1], Partition: int32(n[2]), BatchIndex: -1}
	if len(parts) == 4 {
		if n[3] < 0 {
			return ID{}, strconv.ErrSyntax
		}
		id.BatchIndex = int32(n[3])
	}
	return id, nil
}

// IDOf is the id of a message a consumer or reader received.
func IDOf(id pulsar.MessageID) ID {
	parsed, err := ParseID(id.String())
	if err != nil { // a type of id this package does not know: its last chunk's place
		parsed = ID{Ledger: id.LedgerID(), Entry: id.EntryID(), Partition: id.PartitionIdx(), FirstLedger: id.LedgerID(), FirstEntry: id.EntryID()}
	}
	parsed.BatchIndex = -1
	if id.BatchSize() > 1 || id.BatchIdx() > 0 {
		parsed.BatchIndex = id.BatchIdx()
	}
	return parsed
}

func (id ID) String() string {
	last := fmt.Sprintf("%d:%d:%d", id.Ledger, id.Entry, id.Partition)
	if id.BatchIndex >= 0 {
		last += ":" + strconv.Itoa(int(id.BatchIndex))
	}
	if id.FirstLedger == id.Ledger && id.FirstEntry == id.Entry {
		return last
	}
	return fmt.Sprintf("%d:%d:%d;%s", id.FirstLedger, id.FirstEntry, id.Partition, last)
}

// After tells whether id comes after other in their topic.
func (id ID) After(other ID) bool {
	if !id.SameEntry(other) {
		return id.Ledger > other.Ledger || id.Ledger == other.Ledger && id.Entry > other.Entry
	}
	return id.BatchIndex > other.BatchIndex
}

// SameEntry tells whether both are in one entry of the topic: the same
// message, or two of one batch.
func (id ID) SameEntry(other ID) bool { return id.Ledger == other.Ledger && id.Entry == other.Entry }

// Pulsar is the id to seek to or start a reader at: the message's first
// chunk, or its entry for a message of a batch.
func (id ID) Pulsar() pulsar.MessageID {
	return pulsar.NewMessageID(id.FirstLedger, id.FirstEntry, -1, id.Partition)
}
