package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// newTable returns a tabwriter for human tables; Flush it when done.
func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

// row writes one tab-separated table row.
func row(tw io.Writer, cols ...string) {
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
}

// humanDuration renders d in its largest whole unit: "3s", "5m", "2h",
// "4d"; below a second "0s".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}

// age is humanDuration since t, or "-" for a zero time.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(t))
}

// humanBytes renders n with a binary suffix: "512B", "256Mi", "1.5Gi".
func humanBytes(n int64) string {
	if n < 0 {
		return "-" + humanBytes(-n)
	}
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	suffixes := []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	v := float64(n)
	i := -1
	for v >= unit && i < len(suffixes)-1 {
		v /= unit
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + suffixes[i]
}

// humanCores renders millicores as cores: "0.5", "2".
func humanCores(milli int64) string {
	return strconv.FormatFloat(float64(milli)/1000, 'f', -1, 64)
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// timeNow is the clock for ages; tests fix it.
var timeNow = time.Now
