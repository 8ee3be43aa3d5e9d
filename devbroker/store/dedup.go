package store

// sequenceState is what deduplication remembers of one producer name.
type sequenceState struct {
	Last uint64 `json:"last"`
	// PartialChunk is the last chunk stored of message Last while that
	// message is incomplete, -1 once it is complete or not chunked.
	PartialChunk int32 `json:"partialChunk"`
}

// highest is the sequence id a record advances its producer to.
func (r *Record) highest() uint64 {
	return max(r.SequenceID, r.HighestSequenceID)
}

// chunked reports whether r is one chunk of a larger message.
func (r *Record) chunked() bool { return r.NumChunks > 1 && r.ChunkID >= 0 }

// isDuplicate reports whether r was stored already. The chunks of one
// message share its sequence id, so they are told apart by chunk id.
func (s sequenceState) isDuplicate(r *Record) bool {
	hi := r.highest()
	switch {
	case hi < s.Last:
		return true
	case hi > s.Last:
		return false
	case s.PartialChunk < 0:
		return true
	default:
		return r.chunked() && r.ChunkID <= s.PartialChunk
	}
}

// after returns the state once r is stored.
func (s sequenceState) after(r *Record) sequenceState {
	if r.chunked() && r.ChunkID < r.NumChunks-1 {
		return sequenceState{Last: r.highest(), PartialChunk: r.ChunkID}
	}
	return sequenceState{Last: r.highest(), PartialChunk: -1}
}

// lastComplete is the sequence id of the newest message stored whole, as a
// reconnecting producer needs it: it resends from the next one on.
func (s sequenceState) lastComplete() int64 {
	if s.PartialChunk >= 0 {
		return int64(s.Last) - 1
	}
	return int64(s.Last)
}
