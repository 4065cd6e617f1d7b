package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
)

// WriteTimelineSVG draws the burst: how many groups had their create
// acknowledged and how many were Running, over time from the first create
// call; and, when the peer ran, how many of its containers were up over
// time from its first start.
func WriteTimelineSVG(w io.Writer, r *BurstResult) error {
	const (
		W, H         = 800, 420
		left, right  = 70, 20
		top, bottom  = 40, 60
		plotW, plotH = W - left - right, H - top - bottom
	)
	var created, running []float64
	for _, p := range r.Timeline {
		if p.Created > 0 {
			created = append(created, p.Created)
		}
		running = append(running, p.Running)
	}
	sort.Float64s(created)
	sort.Float64s(running)
	tmax := r.AllRunningSeconds
	if n := len(r.PeerTimeline); n > 0 {
		tmax = math.Max(tmax, r.PeerTimeline[n-1])
	}
	if tmax <= 0 {
		tmax = 1
	}
	ymax := float64(max(r.Count, 1))
	x := func(t float64) float64 { return left + t/tmax*plotW }
	y := func(n float64) float64 { return top + plotH - n/ymax*plotH }
	step := func(ts []float64) string {
		s := fmt.Sprintf("M%.1f,%.1f", x(0), y(0))
		for i, t := range ts {
			s += fmt.Sprintf(" L%.1f,%.1f L%.1f,%.1f", x(t), y(float64(i)), x(t), y(float64(i+1)))
		}
		return s
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	title := fmt.Sprintf("skiff burst: %d groups, all Running in %.2fs (%.0f/s), p99 %.0f ms", r.Count, r.AllRunningSeconds, r.GroupsPerSecond, r.P99Ms)
	if r.Peer != "" {
		title += fmt.Sprintf("; %s %.2fs (%.1f× slower)", r.Peer, r.PeerSeconds, r.Ratio)
	}
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, escape(title))
	// Axes and ticks.
	fmt.Fprintf(w, `<path d="M%d,%d V%d H%d" stroke="black" fill="none"/>`+"\n", left, top, top+plotH, left+plotW)
	for i := 0; i <= 5; i++ {
		t := tmax * float64(i) / 5
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%.2fs</text>`+"\n", x(t), top+plotH+18, t)
		n := ymax * float64(i) / 5
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y(n)+4, n)
		fmt.Fprintf(w, `<path d="M%d,%.1f H%d" stroke="#eee"/>`+"\n", left+1, y(n), left+plotW)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">seconds from the first create call</text>`+"\n", left+plotW/2, H-20)
	series := []struct {
		name, color string
		ts          []float64
	}{{"created (API acknowledged)", "#1f77b4", created}, {"Running", "#2ca02c", running}}
	if len(r.PeerTimeline) > 0 {
		series = append(series, struct {
			name, color string
			ts          []float64
		}{r.Peer + " run -d (same rootfs)", "#d62728", r.PeerTimeline})
	}
	for i, s := range series {
		fmt.Fprintf(w, `<path d="%s" stroke="%s" stroke-width="2" fill="none"/>`+"\n", step(s.ts), s.color)
		ly := top + 16 + i*16
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", left+12, ly-4, s.color, left+30, ly, escape(s.name))
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}

func escape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '<':
			out = append(out, "&lt;"...)
		case '>':
			out = append(out, "&gt;"...)
		case '&':
			out = append(out, "&amp;"...)
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}
