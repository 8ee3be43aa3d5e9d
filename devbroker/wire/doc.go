// Package wire is the bottom layer of pgtandem's broker: the framing and the
// protobuf commands of Apache Pulsar's binary protocol, and nothing else.
//
// # Why our own copy of the protocol
//
// pulsar-client-go keeps its generated protobuf types in an internal package,
// so the broker carries its own subset, generated from pulsarwire.proto with a
// distinct protobuf package name (pgtandem.pulsarwire) that cannot clash with
// the client's types when a test links both. Field numbers and enum values
// are those of upstream PulsarApi.proto.
//
// # Frames
//
// Every frame is [totalSize uint32][commandSize uint32][BaseCommand]. SEND and
// MESSAGE frames carry a payload after the command:
//
//	[magic 0x0e01][crc32c uint32][metadataSize uint32][MessageMetadata][payload]
//
// where the checksum covers everything after itself. [Decoder] reads frames
// and refuses sizes above its limit before allocating; [ParsePayload] checks
// the checksum and decodes the metadata the broker needs; [AppendCommand] and
// [AppendPayloadCommand] encode outgoing frames.
package wire
