package store

import (
	"errors"
	"fmt"
)

// ErrClosed is returned for appends to a log that is closing or closed.
var ErrClosed = errors.New("topic log is closed")

// CorruptError reports a damaged record that cannot be a torn write from a
// crash, because it is not at the end of the newest segment. The broker
// refuses to open such a topic rather than drop data silently.
type CorruptError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("topic log %s is damaged at offset %d (%s): restore the file or move it away to drop its records",
		e.File, e.Offset, e.Reason)
}

// IsCorrupt reports whether err is, or wraps, a [CorruptError].
func IsCorrupt(err error) bool {
	var ce *CorruptError
	return errors.As(err, &ce)
}

// NotFoundError reports a read of a position that the log does not hold,
// because it was never written or retention deleted it.
type NotFoundError struct {
	Pos Position
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no record at message id %s", e.Pos)
}

// IsNotFound reports whether err is, or wraps, a [NotFoundError].
func IsNotFound(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf)
}
