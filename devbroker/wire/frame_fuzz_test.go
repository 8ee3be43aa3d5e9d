package wire

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"google.golang.org/protobuf/proto"
)

// validSendFrame builds a SEND frame by hand, independent of the encoder.
func validSendFrame() []byte {
	meta, _ := proto.Marshal(&MessageMetadata{ProducerName: proto.String("p"), SequenceId: proto.Uint64(1), PublishTime: proto.Uint64(1)})
	var payload []byte
	payload = binary.BigEndian.AppendUint16(payload, MagicCRC32C)
	payload = append(payload, 0, 0, 0, 0)
	payload = binary.BigEndian.AppendUint32(payload, uint32(len(meta)))
	payload = append(payload, meta...)
	payload = append(payload, "hello"...)
	binary.BigEndian.PutUint32(payload[2:], crc32.Checksum(payload[6:], crcTable))
	cmd, _ := proto.Marshal(&BaseCommand{Type: BaseCommand_SEND.Enum(), Send: &CommandSend{ProducerId: proto.Uint64(1), SequenceId: proto.Uint64(1)}})
	var f []byte
	f = binary.BigEndian.AppendUint32(f, uint32(4+len(cmd)+len(payload)))
	f = binary.BigEndian.AppendUint32(f, uint32(len(cmd)))
	f = append(f, cmd...)
	return append(f, payload...)
}

func TestDecoderReadsHandBuiltSend(t *testing.T) {
	f, err := NewDecoder(bytes.NewReader(validSendFrame()), 1<<20).Next()
	if err != nil {
		t.Fatal(err)
	}
	if f.Cmd.GetType() != BaseCommand_SEND || f.Cmd.GetSend().GetSequenceId() != 1 {
		t.Fatalf("decoded %v", f.Cmd)
	}
	meta, err := ParsePayload(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if meta.GetProducerName() != "p" {
		t.Fatalf("metadata %v", meta)
	}
	f.Payload[len(f.Payload)-1] ^= 0xff
	if _, err := ParsePayload(f.Payload); !IsChecksumError(err) {
		t.Fatalf("damaged payload: got %v, want a checksum error", err)
	}
}

func TestDecoderRefusesOversizedFrame(t *testing.T) {
	_, err := NewDecoder(bytes.NewReader([]byte{0x7f, 0xff, 0xff, 0xff, 0, 0}), 1024).Next()
	if !IsFrameError(err) {
		t.Fatalf("got %v, want a frame error", err)
	}
}

func FuzzFrameDecoder(f *testing.F) {
	f.Add(validSendFrame())
	f.Add(AppendCommand(nil, &BaseCommand{Type: BaseCommand_PING.Enum(), Ping: &CommandPing{}}))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 9})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder(bytes.NewReader(data), 64*1024)
		for {
			fr, err := d.Next()
			if err != nil {
				return
			}
			if fr.Payload != nil {
				_, _ = ParsePayload(fr.Payload)
			}
		}
	})
}
