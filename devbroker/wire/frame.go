package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/protobuf/proto"
)

const (
	// MagicCRC32C starts the payload section of SEND and MESSAGE frames.
	MagicCRC32C = 0x0e01
	// FramePadding is the room a frame may take beyond the message size
	// limit for the command and metadata; the client uses the same margin.
	FramePadding = 10 * 1024
	// payloadHeaderSize is magic (2) + checksum (4) + metadata size (4).
	payloadHeaderSize = 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// FrameError reports bytes that are not a valid Pulsar frame. The connection
// that sent them cannot be trusted to be in sync any more.
type FrameError struct {
	Reason string
}

func (e *FrameError) Error() string { return "invalid pulsar frame: " + e.Reason }

// IsFrameError reports whether err is, or wraps, a [FrameError].
func IsFrameError(err error) bool {
	var fe *FrameError
	return errors.As(err, &fe)
}

func frameErrorf(format string, args ...any) error {
	return &FrameError{Reason: fmt.Sprintf(format, args...)}
}

// Frame is one decoded frame. Payload is non-nil only for frames that carry
// one (SEND, MESSAGE) and starts at the magic number.
type Frame struct {
	Cmd     *BaseCommand
	Payload []byte
}

// Decoder reads frames from a stream, refusing any frame larger than
// maxFrameSize before reading its body.
type Decoder struct {
	r            *bufio.Reader
	maxFrameSize int
	sizeBuf      [4]byte
}

// NewDecoder returns a decoder of frames from r of at most maxFrameSize bytes
// (not counting the leading size field).
func NewDecoder(r io.Reader, maxFrameSize int) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 64*1024), maxFrameSize: maxFrameSize}
}

// Next reads one frame. io.EOF is returned as is at a frame boundary; any
// malformed frame yields a [FrameError].
func (d *Decoder) Next() (*Frame, error) {
	if _, err := io.ReadFull(d.r, d.sizeBuf[:]); err != nil {
		return nil, err
	}
	total := binary.BigEndian.Uint32(d.sizeBuf[:])
	if total < 4 || uint64(total) > uint64(d.maxFrameSize) {
		return nil, frameErrorf("frame size %d outside [4, %d]", total, d.maxFrameSize)
	}
	body := make([]byte, total)
	if _, err := io.ReadFull(d.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return ParseFrame(body)
}

// ParseFrame decodes a frame body: everything after the total size field.
func ParseFrame(body []byte) (*Frame, error) {
	if len(body) < 4 {
		return nil, frameErrorf("frame of %d bytes has no command size", len(body))
	}
	cmdSize := binary.BigEndian.Uint32(body)
	if uint64(cmdSize) > uint64(len(body)-4) {
		return nil, frameErrorf("command size %d exceeds frame of %d bytes", cmdSize, len(body))
	}
	cmd := &BaseCommand{}
	if err := proto.Unmarshal(body[4:4+cmdSize], cmd); err != nil {
		return nil, frameErrorf("command does not decode: %v", err)
	}
	if cmd.Type == nil {
		return nil, frameErrorf("command has no type")
	}
	f := &Frame{Cmd: cmd}
	if rest := body[4+cmdSize:]; len(rest) > 0 {
		f.Payload = rest
	}
	return f, nil
}

// ParsePayload checks the checksum of a payload section (starting at the
// magic number) and decodes its message metadata.
func ParsePayload(p []byte) (*MessageMetadata, error) {
	if len(p) < payloadHeaderSize {
		return nil, frameErrorf("payload of %d bytes is shorter than its header", len(p))
	}
	if magic := binary.BigEndian.Uint16(p); magic != MagicCRC32C {
		return nil, frameErrorf("payload magic 0x%04x, want 0x%04x", magic, MagicCRC32C)
	}
	if want, got := binary.BigEndian.Uint32(p[2:]), crc32.Checksum(p[6:], crcTable); want != got {
		return nil, &ChecksumError{Want: want, Got: got}
	}
	metaSize := binary.BigEndian.Uint32(p[6:])
	if uint64(metaSize) > uint64(len(p)-payloadHeaderSize) {
		return nil, frameErrorf("metadata size %d exceeds payload of %d bytes", metaSize, len(p))
	}
	meta := &MessageMetadata{}
	if err := proto.Unmarshal(p[payloadHeaderSize:payloadHeaderSize+metaSize], meta); err != nil {
		return nil, frameErrorf("message metadata does not decode: %v", err)
	}
	return meta, nil
}

// ChecksumError reports a payload whose crc32c does not match its content:
// the message was damaged on its way and must not be stored.
type ChecksumError struct {
	Want, Got uint32
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("payload checksum mismatch: frame says 0x%08x, content is 0x%08x", e.Want, e.Got)
}

// IsChecksumError reports whether err is, or wraps, a [ChecksumError].
func IsChecksumError(err error) bool {
	var ce *ChecksumError
	return errors.As(err, &ce)
}

// AppendCommand appends the frame of a payload-less command to dst.
func AppendCommand(dst []byte, cmd *BaseCommand) []byte {
	return AppendPayloadCommand(dst, cmd, nil)
}

// AppendPayloadCommand appends a frame made of cmd followed by payload, a
// payload section as [ParsePayload] accepts it, to dst.
func AppendPayloadCommand(dst []byte, cmd *BaseCommand, payload []byte) []byte {
	size := proto.Size(cmd)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+size+len(payload)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(size))
	dst, err := proto.MarshalOptions{}.MarshalAppend(dst, cmd)
	if err != nil {
		// Only a message with invalid UTF-8 in a string field fails to
		// marshal; the broker builds every command itself, so this is a bug.
		panic(fmt.Sprintf("pulsar command %v does not marshal: %v", cmd.GetType(), err))
	}
	return append(dst, payload...)
}
