package store

import (
	"encoding/binary"
	"hash/crc32"
)

// Record is what a producer's send becomes in the log.
type Record struct {
	PublishTime       int64 // milliseconds since the epoch, from the message metadata
	ProducerName      string
	SequenceID        uint64
	HighestSequenceID uint64 // last sequence id of a batch; equals SequenceID otherwise
	NumMessages       int32  // messages in the batch; 1 when not batched
	ChunkID           int32  // -1 when the message is not chunked
	NumChunks         int32
	Payload           []byte // the payload section from the magic number on, as sent
}

// Entry is a stored record with its position.
type Entry struct {
	Record
	Pos Position
}

const (
	recordVersion    = 1
	recordHeaderSize = 8 // length + crc32c
	// recordFixedSize is the body up to the producer name: version,
	// publish time, sequence ids, message count, chunk id and count, name length.
	recordFixedSize = 1 + 8 + 8 + 8 + 4 + 4 + 4 + 2
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends the framed record to dst.
func appendRecord(dst []byte, r *Record) []byte {
	bodyLen := recordFixedSize + len(r.ProducerName) + len(r.Payload)
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, uint32(bodyLen))
	dst = binary.BigEndian.AppendUint32(dst, 0)
	body := len(dst)
	dst = append(dst, recordVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.PublishTime))
	dst = binary.BigEndian.AppendUint64(dst, r.SequenceID)
	dst = binary.BigEndian.AppendUint64(dst, r.HighestSequenceID)
	dst = binary.BigEndian.AppendUint32(dst, uint32(r.NumMessages))
	dst = binary.BigEndian.AppendUint32(dst, uint32(r.ChunkID))
	dst = binary.BigEndian.AppendUint32(dst, uint32(r.NumChunks))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.ProducerName)))
	dst = append(dst, r.ProducerName...)
	dst = append(dst, r.Payload...)
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[body:], crcTable))
	return dst
}

// decodeRecordBody parses a body whose checksum has been verified. The
// payload aliases body.
func decodeRecordBody(body []byte) (Record, bool) {
	if len(body) < recordFixedSize || body[0] != recordVersion {
		return Record{}, false
	}
	r := Record{
		PublishTime:       int64(binary.BigEndian.Uint64(body[1:])),
		SequenceID:        binary.BigEndian.Uint64(body[9:]),
		HighestSequenceID: binary.BigEndian.Uint64(body[17:]),
		NumMessages:       int32(binary.BigEndian.Uint32(body[25:])),
		ChunkID:           int32(binary.BigEndian.Uint32(body[29:])),
		NumChunks:         int32(binary.BigEndian.Uint32(body[33:])),
	}
	nameLen := int(binary.BigEndian.Uint16(body[37:]))
	if len(body) < recordFixedSize+nameLen {
		return Record{}, false
	}
	r.ProducerName = string(body[recordFixedSize : recordFixedSize+nameLen])
	r.Payload = body[recordFixedSize+nameLen:]
	return r, true
}
