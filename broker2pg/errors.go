package broker2pg

import (
	"errors"
	"fmt"

	"github.com/apache/pulsar-client-go/pulsar"
)

// BlockedError stops the apply at one message that cannot be applied as the
// target stands: a table or column missing, a value the target type cannot
// parse, a message that is not a valid event. Nothing past it is acknowledged;
// the service retries every Config.BlockedRetry and continues by itself once
// the target is fixed.
type BlockedError struct {
	// Table and Column name the object at fault, when there is one.
	Table  string
	Column string
	// MessageID is the Pulsar id of the message (or the first message of
	// the target transaction) that could not be applied; LSN its source
	// commit LSN.
	MessageID string
	LSN       string
	Reason    string
	// Code is the target's SQLSTATE when a statement failed.
	Code string
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
		msg += " (source lsn " + e.LSN + ")"
	}
	return msg + ": " + e.Reason
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
