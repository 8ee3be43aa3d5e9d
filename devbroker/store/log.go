package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultSegmentSize is the size past which the log starts a new segment.
	// Retention deletes whole segments, so this is its granularity.
	DefaultSegmentSize = 64 << 20
	segmentSuffix      = ".log"
	dedupFile          = "dedup.json"
	// maxGroupBytes bounds how much one group commit buffers in memory.
	maxGroupBytes = 16 << 20
)

// LogOptions tune a [Log].
type LogOptions struct {
	SegmentSize int64
	// Dedup turns on deduplication by producer name and sequence id.
	Dedup bool
	// OnAppend is called, from the writer goroutine, after new records
	// became readable.
	OnAppend func()
	Logger   *slog.Logger
}

// AppendResult is the outcome of one append.
type AppendResult struct {
	Pos       Position
	Duplicate bool // the record was stored before; Pos is then meaningless
	Err       error
}

type appendRequest struct {
	rec  *Record
	done func(AppendResult)
}

type entryInfo struct {
	offset      int64
	size        uint32 // body size
	publishTime int64
	numMessages int32
}

type segment struct {
	ledger  int64
	path    string
	f       *os.File
	size    int64
	entries []entryInfo
}

// Log is one topic's append-only log. Reads are safe from any goroutine;
// appends are queued to the log's writer goroutine.
type Log struct {
	dir  string
	opts LogOptions

	reqs chan *appendRequest
	quit chan struct{}
	wg   sync.WaitGroup

	mu       sync.RWMutex
	segs     []*segment // ascending ledger ids; the last one takes appends
	dedup    map[string]sequenceState
	failed   error // set when a write or fsync failed: the log takes no more appends
	messages int64 // messages (not records) in the log
	closed   bool
}

// OpenLog opens or creates the log in dir, cutting off a torn record at the
// end of the newest segment, and starts its writer goroutine.
func OpenLog(dir string, opts LogOptions) (*Log, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnAppend == nil {
		opts.OnAppend = func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Log{
		dir:   dir,
		opts:  opts,
		reqs:  make(chan *appendRequest, 4096),
		quit:  make(chan struct{}),
		dedup: map[string]sequenceState{},
	}
	if err := l.load(); err != nil {
		l.closeFiles()
		return nil, err
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

func (l *Log) load() error {
	if b, err := os.ReadFile(filepath.Join(l.dir, dedupFile)); err == nil {
		if err := json.Unmarshal(b, &l.dedup); err != nil {
			return fmt.Errorf("dedup snapshot %s: %w", filepath.Join(l.dir, dedupFile), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	names, err := filepath.Glob(filepath.Join(l.dir, "*"+segmentSuffix))
	if err != nil {
		return err
	}
	sort.Strings(names)
	for i, name := range names {
		ledger, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(name), segmentSuffix), 10, 64)
		if err != nil {
			continue
		}
		seg, err := l.openSegment(name, ledger, i == len(names)-1)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, seg)
	}
	if len(l.segs) == 0 {
		return l.addSegment(1)
	}
	return nil
}

// openSegment scans a segment file, indexing its records and replaying them
// into the dedup state. A bad record at the end of the newest segment is a
// torn write and is cut off; anywhere else it is a [CorruptError].
func (l *Log) openSegment(path string, ledger int64, newest bool) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	seg := &segment{ledger: ledger, path: path, f: f}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &offsetReader{f: f}
	var hdr [recordHeaderSize]byte
	var body []byte
	for seg.size < st.Size() {
		bad := ""
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			bad = "record header cut short"
		} else {
			n := binary.BigEndian.Uint32(hdr[:])
			if int64(n) > st.Size()-seg.size-recordHeaderSize {
				bad = fmt.Sprintf("record length %d runs past the end of the file", n)
			} else {
				body = append(body[:0], make([]byte, n)...)
				if _, err := io.ReadFull(r, body); err != nil {
					return nil, err
				}
				if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
					bad = "record checksum mismatch"
				}
			}
		}
		var rec Record
		if bad == "" {
			var ok bool
			if rec, ok = decodeRecordBody(body); !ok {
				bad = "record body does not decode"
			}
		}
		if bad != "" {
			if !newest {
				f.Close()
				return nil, &CorruptError{File: path, Offset: seg.size, Reason: bad}
			}
			l.opts.Logger.Warn("cutting off torn record at end of topic log",
				"file", path, "offset", seg.size, "bytes_dropped", st.Size()-seg.size, "reason", bad)
			if err := f.Truncate(seg.size); err != nil {
				f.Close()
				return nil, err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return nil, err
			}
			break
		}
		seg.entries = append(seg.entries, entryInfo{
			offset: seg.size, size: uint32(len(body)), publishTime: rec.PublishTime, numMessages: rec.NumMessages,
		})
		l.messages += int64(rec.NumMessages)
		seg.size += recordHeaderSize + int64(len(body))
		if l.opts.Dedup {
			l.applyDedup(&rec)
		}
	}
	return seg, nil
}

// offsetReader reads a file sequentially through ReadAt, so the file offset
// that appends use is never moved.
type offsetReader struct {
	f   *os.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// applyDedup records r in the dedup state and reports whether it was a
// duplicate. Callers hold l.mu or own l exclusively.
func (l *Log) applyDedup(r *Record) (duplicate bool) {
	if r.ProducerName == "" {
		return false
	}
	st, known := l.dedup[r.ProducerName]
	if known && st.isDuplicate(r) {
		return true
	}
	l.dedup[r.ProducerName] = st.after(r)
	return false
}

func (l *Log) addSegment(ledger int64) error {
	path := filepath.Join(l.dir, fmt.Sprintf("%020d%s", ledger, segmentSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	l.segs = append(l.segs, &segment{ledger: ledger, path: path, f: f})
	return nil
}

// Append queues r; done is called from the writer goroutine once r is
// durable, found to be a duplicate, or failed. Appends complete in the order
// they were queued.
func (l *Log) Append(r *Record, done func(AppendResult)) {
	select {
	case l.reqs <- &appendRequest{rec: r, done: done}:
	case <-l.quit:
		done(AppendResult{Err: ErrClosed})
	}
}

func (l *Log) run() {
	defer l.wg.Done()
	var buf []byte
	for {
		var group []*appendRequest
		select {
		case r := <-l.reqs:
			group = append(group, r)
		case <-l.quit:
			l.failQueued()
			return
		}
		size := len(group[0].rec.Payload)
	drain:
		for size < maxGroupBytes {
			select {
			case r := <-l.reqs:
				group = append(group, r)
				size += len(r.rec.Payload)
			default:
				break drain
			}
		}
		buf = l.commit(group, buf[:0])
		if cap(buf) > maxGroupBytes {
			buf = nil
		}
	}
}

func (l *Log) failQueued() {
	for {
		select {
		case r := <-l.reqs:
			r.done(AppendResult{Err: ErrClosed})
		default:
			return
		}
	}
}

// commit writes one group with a single fsync and then completes it.
func (l *Log) commit(group []*appendRequest, buf []byte) []byte {
	results := make([]AppendResult, len(group))
	l.mu.Lock()
	seg := l.segs[len(l.segs)-1]
	failed := l.failed
	next := int64(len(seg.entries))
	var infos []entryInfo
	var newMessages int64
	for i, req := range group {
		switch {
		case failed != nil:
			results[i].Err = failed
		case l.opts.Dedup && l.applyDedup(req.rec):
			results[i].Duplicate = true
		default:
			off := seg.size + int64(len(buf))
			buf = appendRecord(buf, req.rec)
			infos = append(infos, entryInfo{
				offset: off, size: uint32(int64(len(buf)) - off + seg.size - recordHeaderSize),
				publishTime: req.rec.PublishTime, numMessages: req.rec.NumMessages,
			})
			newMessages += int64(req.rec.NumMessages)
			results[i].Pos = Position{Ledger: seg.ledger, Entry: next}
			next++
		}
	}
	l.mu.Unlock()

	if len(buf) > 0 && failed == nil {
		err := writeAndSync(seg.f, buf, seg.size)
		l.mu.Lock()
		if err != nil {
			l.failed = fmt.Errorf("topic log %s: %w", seg.path, err)
			l.opts.Logger.Error("topic log write failed; the topic takes no more messages", "file", seg.path, "err", err)
			for i := range results {
				if !results[i].Duplicate {
					results[i] = AppendResult{Err: l.failed}
				}
			}
		} else {
			seg.entries = append(seg.entries, infos...)
			seg.size += int64(len(buf))
			l.messages += newMessages
		}
		l.mu.Unlock()
	}
	for i, req := range group {
		req.done(results[i])
	}
	if len(infos) > 0 {
		l.opts.OnAppend()
	}
	if seg.size >= l.opts.SegmentSize {
		l.mu.Lock()
		if err := l.addSegment(seg.ledger + 1); err != nil {
			l.opts.Logger.Error("cannot start a new topic log segment; appending to the current one", "dir", l.dir, "err", err)
		}
		l.mu.Unlock()
	}
	return buf
}

func writeAndSync(f *os.File, buf []byte, off int64) error {
	if _, err := f.WriteAt(buf, off); err != nil {
		return err
	}
	return f.Sync()
}

// Close stops the writer, failing queued appends with [ErrClosed], and
// closes the files. Everything acknowledged is already fsynced.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
	l.wg.Wait()
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	var errs []error
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	return errors.Join(errs...)
}

// LastSequenceID returns the sequence id of the newest message stored whole
// from producerName, or -1 if none is known.
func (l *Log) LastSequenceID(producerName string) int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	st, ok := l.dedup[producerName]
	if !ok {
		return -1
	}
	return st.lastComplete()
}

// segmentFor returns the index of the segment holding ledger, or -1.
func (l *Log) segmentFor(ledger int64) int {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].ledger >= ledger })
	if i < len(l.segs) && l.segs[i].ledger == ledger {
		return i
	}
	return -1
}

// Read returns the record at p.
func (l *Log) Read(p Position) (Entry, error) {
	l.mu.RLock()
	i := l.segmentFor(p.Ledger)
	if i < 0 || p.Entry < 0 || p.Entry >= int64(len(l.segs[i].entries)) {
		l.mu.RUnlock()
		return Entry{}, &NotFoundError{Pos: p}
	}
	seg, info := l.segs[i], l.segs[i].entries[p.Entry]
	l.mu.RUnlock()
	body := make([]byte, info.size)
	if _, err := seg.f.ReadAt(body, info.offset+recordHeaderSize); err != nil {
		return Entry{}, fmt.Errorf("read message id %s from %s: %w", p, seg.path, err)
	}
	rec, ok := decodeRecordBody(body)
	if !ok {
		return Entry{}, &CorruptError{File: seg.path, Offset: info.offset, Reason: "record body does not decode"}
	}
	return Entry{Record: rec, Pos: p}, nil
}

// After returns the position of the first record after p, if there is one.
func (l *Log) After(p Position) (Position, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].ledger >= p.Ledger })
	for ; i < len(l.segs); i++ {
		seg := l.segs[i]
		first := int64(0)
		if seg.ledger == p.Ledger {
			first = max(p.Entry+1, 0)
		}
		if first < int64(len(seg.entries)) {
			return Position{Ledger: seg.ledger, Entry: first}, true
		}
	}
	return Position{}, false
}

// Last returns the position of the newest record, or (newest ledger, -1)
// when the log holds none: the position a "latest" cursor starts from.
func (l *Log) Last() Position {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for i := len(l.segs) - 1; i >= 0; i-- {
		if n := len(l.segs[i].entries); n > 0 {
			return Position{Ledger: l.segs[i].ledger, Entry: int64(n - 1)}
		}
	}
	return Position{Ledger: l.segs[len(l.segs)-1].ledger, Entry: -1}
}

// NumMessages returns how many messages the record at p holds (1 when it
// is unknown, so that flow control still moves).
func (l *Log) NumMessages(p Position) int32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i := l.segmentFor(p.Ledger); i >= 0 && p.Entry >= 0 && p.Entry < int64(len(l.segs[i].entries)) {
		return max(l.segs[i].entries[p.Entry].numMessages, 1)
	}
	return 1
}

// FirstAtOrAfterTime returns the first record published at or after ms
// (milliseconds since the epoch), if there is one.
func (l *Log) FirstAtOrAfterTime(ms int64) (Position, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, seg := range l.segs {
		// Publish times come from producers' clocks and need not be sorted,
		// so this is a scan, not a search; seeking by time is rare.
		for e, info := range seg.entries {
			if info.publishTime >= ms {
				return Position{Ledger: seg.ledger, Entry: int64(e)}, true
			}
		}
	}
	return Position{}, false
}

// Stats is a summary of a log for monitoring.
type Stats struct {
	Records  int64
	Messages int64
	Bytes    int64
	Segments int
}

// Stats returns the log's current size.
func (l *Log) Stats() Stats {
	l.mu.RLock()
	defer l.mu.RUnlock()
	st := Stats{Messages: l.messages, Segments: len(l.segs)}
	for _, s := range l.segs {
		st.Records += int64(len(s.entries))
		st.Bytes += s.size
	}
	return st
}

// Ledger describes one segment of a log.
type Ledger struct {
	ID      int64 // the segment number, the ledger id of its message ids
	Entries int64 // records stored in it
	Bytes   int64 // its file size
}

// Ledgers returns the segments the log holds, oldest first, the last one
// taking appends; one consistent snapshot.
func (l *Log) Ledgers() []Ledger {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]Ledger, len(l.segs))
	for i, s := range l.segs {
		out[i] = Ledger{ID: s.ledger, Entries: int64(len(s.entries)), Bytes: s.size}
	}
	return out
}

// CountBetween returns the records and messages after from up to and
// including to.
func (l *Log) CountBetween(from, to Position) (records, messages int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, seg := range l.segs {
		if seg.ledger < from.Ledger || seg.ledger > to.Ledger {
			continue
		}
		lo, hi := int64(0), int64(len(seg.entries))-1
		if seg.ledger == from.Ledger {
			lo = max(from.Entry+1, 0)
		}
		if seg.ledger == to.Ledger {
			hi = min(hi, to.Entry)
		}
		for e := lo; e <= hi; e++ {
			records++
			messages += int64(max(seg.entries[e].numMessages, 1))
		}
	}
	return records, messages
}

// Retain deletes the oldest segments that every durable subscription has
// consumed (all records at or before consumed) while the log is larger than
// maxBytes or their newest record is older than maxAge. Zero limits mean
// no limit; with both zero nothing is deleted. The newest segment stays.
func (l *Log) Retain(consumed Position, maxBytes int64, maxAge time.Duration, now time.Time) (int, error) {
	if maxBytes <= 0 && maxAge <= 0 {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	removed := 0
	for len(l.segs) > 1 {
		seg := l.segs[0]
		n := len(seg.entries)
		if n > 0 && consumed.Less(Position{Ledger: seg.ledger, Entry: int64(n - 1)}) {
			break
		}
		tooBig := maxBytes > 0 && total > maxBytes
		tooOld := maxAge > 0 && (n == 0 || now.Sub(time.UnixMilli(seg.entries[n-1].publishTime)) > maxAge)
		if !tooBig && !tooOld {
			break
		}
		if err := l.snapshotDedup(); err != nil {
			return removed, err
		}
		seg.f.Close()
		if err := os.Remove(seg.path); err != nil {
			return removed, err
		}
		for _, e := range seg.entries {
			l.messages -= int64(e.numMessages)
		}
		total -= seg.size
		l.segs = l.segs[1:]
		removed++
	}
	if removed > 0 {
		return removed, syncDir(l.dir)
	}
	return 0, nil
}

// snapshotDedup saves the dedup state, which the records of a segment about
// to be deleted would no longer give back at the next start.
func (l *Log) snapshotDedup() error {
	b, err := json.Marshal(l.dedup)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(l.dir, dedupFile), b)
}

// Remove closes the log and deletes its directory.
func (l *Log) Remove() error {
	if err := l.Close(); err != nil {
		return err
	}
	return os.RemoveAll(l.dir)
}
