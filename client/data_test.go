package client

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// TestAppendRefusesMoreThanOneRequest checks that an append too long for
// one request is refused before anything is sent, rather than split into
// requests that other clients' appends could separate.
func TestAppendRefusesMoreThanOneRequest(t *testing.T) {
	var c *Client // nothing may be sent
	if _, _, err := c.Append(context.Background(), 2, 1, make([]byte, MaxDataRequest+1)); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("append of MaxDataRequest+1 bytes: %v, want EFBIG", err)
	}
}
