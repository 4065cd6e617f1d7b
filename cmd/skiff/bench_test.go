package main

import (
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/bench"
)

func TestParseSpikes(t *testing.T) {
	got, err := parseSpikes("0.375:40:3s, 0.75:25:2s,")
	if err != nil {
		t.Fatal(err)
	}
	want := []bench.Spike{{At: 0.375, Size: 40, Width: 3 * time.Second}, {At: 0.75, Size: 25, Width: 2 * time.Second}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, err := parseSpikes(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"0.5:10", "x:10:1s", "0.5:ten:1s", "0.5:10:soon"} {
		if _, err := parseSpikes(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
