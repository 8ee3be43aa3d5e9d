package pg2broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestGraceContextEndsGraceAfterItsParent(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	const grace = 50 * time.Millisecond
	ctx, cancel := graceContext(parent, grace)
	defer cancel()
	stop()
	stopped := time.Now()
	if ctx.Err() != nil {
		t.Fatal("ended with its parent, want grace later")
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not ended 10 s after its parent")
	}
	if took := time.Since(stopped); took < grace {
		t.Fatalf("ended %s after its parent, want at least %s", took, grace)
	}
	if cause := context.Cause(ctx); cause == nil || !strings.Contains(cause.Error(), "stop timeout") {
		t.Fatalf("cause %v, want the stop timeout", cause)
	}
}

func TestGraceContextCancel(t *testing.T) {
	ctx, cancel := graceContext(context.Background(), time.Hour)
	if ctx.Err() != nil {
		t.Fatal("ended before its parent")
	}
	cancel()
	if !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Fatalf("after cancel: cause %v, want context.Canceled", context.Cause(ctx))
	}
}
