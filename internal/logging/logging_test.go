package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestFormatsAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "warn", "auto")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "table", "public.t")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("auto on a non-terminal is not JSON: %q", buf.String())
	}
	if rec["msg"] != "shown" || rec["table"] != "public.t" {
		t.Fatalf("record %v", rec)
	}
	buf.Reset()
	log, _ = New(&buf, "debug", "text")
	log.Debug("d")
	if !strings.Contains(buf.String(), "level=DEBUG msg=d") {
		t.Fatalf("text output %q", buf.String())
	}
	if _, err := New(&buf, "loud", "text"); err == nil {
		t.Fatal("bad level accepted")
	}
	if _, err := New(&buf, "info", "xml"); err == nil {
		t.Fatal("bad format accepted")
	}
}
