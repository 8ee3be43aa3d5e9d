package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const cursorSuffix = ".cursor"

// CursorState is what a durable subscription must not forget.
type CursorState struct {
	// MarkDelete is the newest position at or before which everything is
	// acknowledged.
	MarkDelete Position `json:"markDelete"`
	// Acked holds positions after MarkDelete acknowledged individually.
	Acked []Position `json:"acked,omitempty"`
	// Batches holds, for partly acknowledged batches after MarkDelete, the
	// bit set of messages still unacknowledged, as the protocol's ack_set.
	Batches []BatchAck `json:"batches,omitempty"`
}

// BatchAck is the unacknowledged remainder of one batch.
type BatchAck struct {
	Pos       Position `json:"pos"`
	Remaining []int64  `json:"remaining"`
}

// CursorStore keeps the cursor files of one topic's durable subscriptions.
type CursorStore struct {
	dir string
}

// NewCursorStore returns the cursor store in dir, creating dir.
func NewCursorStore(dir string) (*CursorStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &CursorStore{dir: dir}, nil
}

func (c *CursorStore) path(subscription string) string {
	return filepath.Join(c.dir, url.PathEscape(subscription)+cursorSuffix)
}

// Save durably replaces the state of subscription.
func (c *CursorStore) Save(subscription string, st CursorState) error {
	sort.Slice(st.Acked, func(i, j int) bool { return st.Acked[i].Less(st.Acked[j]) })
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.path(subscription), b); err != nil {
		return fmt.Errorf("save cursor of subscription %q: %w", subscription, err)
	}
	return nil
}

// Load returns the saved state of subscription.
func (c *CursorStore) Load(subscription string) (CursorState, error) {
	var st CursorState
	b, err := os.ReadFile(c.path(subscription))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("cursor file %s: %w", c.path(subscription), err)
	}
	return st, nil
}

// Delete forgets subscription.
func (c *CursorStore) Delete(subscription string) error {
	if err := os.Remove(c.path(subscription)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(c.dir)
}

// List returns the names of the saved subscriptions.
func (c *CursorStore) List() ([]string, error) {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), cursorSuffix)
		if !ok {
			continue
		}
		if name, err := url.PathUnescape(n); err == nil {
			names = append(names, name)
		}
	}
	return names, nil
}
