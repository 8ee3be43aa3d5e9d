package broker2pg

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/apache/pulsar-client-go/pulsar"
)

// BlockedError stops the apply at one message that cannot be applied as the
// target stands: a table or column missing, a value the target type cannot
// parse, a row the source changed that the target does not hold, a message
// that is not a valid event. Nothing past it is acknowledged; the service
// retries every Config.BlockedRetry and continues by itself once the target
// is fixed, or once an operator recorded the change as one to skip
// (`pgtandem apply skip`, see [RecordSkip]).
type BlockedError struct {
	// Table and Column name the object at fault, when there is one.
	Table  string
	Column string
	// MessageID is the Pulsar id of the message that could not be applied;
	// LSN its source commit LSN and Change its position in that source
	// transaction (the event's seq), 0 when the block is not at one change.
	MessageID string
	LSN       string
	Change    int
	Reason    string
	// Code is the target's SQLSTATE when a statement failed.
	Code string
	// Err is the named cause, when there is one: a *MissingRowError or a
	// *ReplicaIdentityError.
	Err error
	// Source and Target name the direction, for the skip command the
	// message suggests.
	Source, Target string
	// batch marks a failure of a statement that applied several changes at
	// once (or of a round trip of several statements): the service applies
	// those transactions again one change at a time to name the one at
	// fault, and blocks only when that fails too.
	batch bool
}

func (e *BlockedError) Error() string {
	msg := "apply blocked"
	if e.Table != "" {
		msg += " on table " + e.Table
		if e.Column != "" {
			msg += " column " + e.Column
		}
	}
	if e.MessageID != "" {
		msg += " at message " + e.MessageID
	}
	if e.LSN != "" {
		msg += " (source lsn " + e.LSN
		if e.Change > 0 {
			msg += " change " + strconv.Itoa(e.Change)
		}
		msg += ")"
	}
	msg += ": " + e.Reason
	if e.Change > 0 && e.LSN != "" {
		source, target := e.Source, e.Target
		if source == "" {
			source, target = "SOURCE", "TARGET"
		}
		msg += fmt.Sprintf("; to pass over exactly this change instead: pgtandem apply skip --from %s --to %s --lsn %s --change %d", source, target, e.LSN, e.Change)
	}
	return msg
}

func (e *BlockedError) Unwrap() error { return e.Err }

// MissingRowError reports an UPDATE or DELETE of the source whose row the
// target does not hold as the source had it: the statement changed no row
// (or, on a target with duplicates the source did not have, several).
// Applying past it would leave the target silently different.
type MissingRowError struct {
	Table string
	// Kind is update or delete; Key the old values the change is matched
	// by, as ("col", ...)=('value', ...).
	Kind string
	Key  string
	// LSN is the source commit LSN, Change the change's position in that
	// transaction, MessageID its Pulsar message.
	LSN       string
	Change    int
	MessageID string
	// Matched is the number of target rows the change matched; the source
	// changed exactly one.
	Matched int64
	// WholeRow tells that the change is matched by its whole old row
	// (REPLICA IDENTITY FULL), not by a key.
	WholeRow bool
}

func (e *MissingRowError) Error() string {
	found := "no row"
	if e.Matched > 1 {
		found = strconv.FormatInt(e.Matched, 10) + " rows"
	}
	msg := fmt.Sprintf("the %s of %s %s (source lsn %s change %d, message %s) matches %s on the target, where the source changed exactly one: the target no longer holds what the source had; put the row back on the target as the source had it before this change (the apply then continues by itself)",
		e.Kind, e.Table, e.Key, e.LSN, e.Change, e.MessageID, found)
	if e.WholeRow {
		msg += "; the change is matched by its whole old row (REPLICA IDENTITY FULL): when a partition of the table has a replica identity of its own, the source sends only that key and NULL for the other columns, so set REPLICA IDENTITY FULL on every partition on the source"
	}
	return msg
}

// ReplicaIdentityError reports a change that does not carry the old row its
// table's replica identity promises: an UPDATE of a table published as
// REPLICA IDENTITY FULL without any old row, as PostgreSQL sends it when a
// partition has a replica identity of its own (DEFAULT or an index) and the
// change is published through the root. Matching by the values it lacks
// would be a guess.
type ReplicaIdentityError struct {
	Table     string
	Kind      string
	LSN       string
	Change    int
	MessageID string
}

func (e *ReplicaIdentityError) Error() string {
	return fmt.Sprintf("the %s of %s (source lsn %s change %d, message %s) carries no old row although the table is published with REPLICA IDENTITY FULL: a partition of it has a replica identity of its own, which sends only the key, and the apply will not guess which row is meant; on the source, ALTER TABLE <partition> REPLICA IDENTITY FULL for every partition, then make this row on the target what the source holds",
		e.Kind, e.Table, e.LSN, e.Change, e.MessageID)
}

// IdentityError reports a topic whose events come from another source system
// than the one whose changes the target already holds: applying them would
// mix two histories.
type IdentityError struct {
	Source       string
	StoredSystem string
	EventSystem  string
}

func (e *IdentityError) Error() string {
	return fmt.Sprintf("pgtandem.apply_progress of source %q records system %s, but the topic carries changes of system %s: the topic or the target belongs to another source; synchronise the target again (pgtandem init) or fix clusters.%s",
		e.Source, e.StoredSystem, e.EventSystem, e.Source)
}

// IsBlocked reports whether err stops the apply at a message until the target
// or the topic is fixed by hand.
func IsBlocked(err error) bool {
	var be *BlockedError
	return errors.As(err, &be)
}

// IsFatal reports whether err must stop the service: retrying cannot make a
// foreign topic the right one.
func IsFatal(err error) bool {
	var ie *IdentityError
	return errors.As(err, &ie)
}

// idString prints a message id for an operator; ids are kept unprinted
// until an error needs them, as printing one per message is costly.
func idString(id pulsar.MessageID) string {
	if id == nil {
		return ""
	}
	return id.String()
}
