package pg2broker

import (
	"errors"
	"fmt"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// SlotError reports a replication slot that is missing, invalidated or not
// ours. pg2broker never recreates a slot: a new slot starts at the present and
// everything between the old position and now would be lost silently.
type SlotError struct {
	Slot   string
	Reason string
}

func (e *SlotError) Error() string {
	return fmt.Sprintf("replication slot %q: %s", e.Slot, e.Reason)
}

// TopicMismatchError reports a topic whose last message was not written from
// this source system, so resuming into it would mix two histories.
type TopicMismatchError struct {
	Topic        string
	TopicSystem  string
	SourceSystem string
}

func (e *TopicMismatchError) Error() string {
	return fmt.Sprintf("topic %s holds changes of system %s, but the source is system %s: use another topic (clusters.<name>.topic) or clear this one",
		e.Topic, e.TopicSystem, e.SourceSystem)
}

// PublishError reports a frame the broker refused or could not take.
type PublishError struct {
	Topic    string
	LSN      string
	Fragment int
	Err      error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("publish to %s of the frame of the transaction at lsn %s, fragment %d: %v", e.Topic, e.LSN, e.Fragment, e.Err)
}

func (e *PublishError) Unwrap() error { return e.Err }

// IsFatal reports whether err must stop the service instead of being retried:
// retrying cannot fix a misconfigured source, a lost slot or a foreign topic.
func IsFatal(err error) bool {
	var (
		pe *catalog.PreflightError
		ri *catalog.ReplicaIdentityError
		pi *catalog.PartitionIdentityError
		se *SlotError
		tm *TopicMismatchError
		pr *ProtocolError
	)
	return errors.As(err, &pe) || errors.As(err, &ri) || errors.As(err, &pi) || errors.As(err, &se) || errors.As(err, &tm) || errors.As(err, &pr)
}
