package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// WriteReplaySVG draws the measured day of each mode, one panel per mode
// stacked top to bottom on the same axes: creates per bucket (the demand,
// grey bars) split into pool hits (green) and misses (red) as the hosts
// counted them, and the pool's size (blue line) and target (dashed).
func WriteReplaySVG(w io.Writer, r *ReplayResult) error {
	modes := sortedModes(r)
	const (
		W           = 900
		left, right = 70, 20
		top         = 70
		panelH      = 200
		gap         = 60
		plotW       = W - left - right
	)
	H := top + len(modes)*(panelH+gap) + 10
	day := r.DaySeconds
	if day <= 0 {
		day = 1
	}
	bw := r.BucketSecs
	if bw <= 0 {
		bw = day / 60
	}
	// One y scale for every panel, so the modes compare at a glance.
	ymax := 1.0
	for _, m := range modes {
		for _, b := range m.Series {
			ymax = math.Max(ymax, math.Max(float64(b.Demand), float64(b.Hits+b.Misses)))
			ymax = math.Max(ymax, math.Max(b.PoolSize, b.Target))
		}
	}
	ymax = niceCeil(ymax)
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	title := fmt.Sprintf("skiff replay: the measured day (day %d of %d, %.0fs compressed), seed %d, class %s, %.0f-second buckets",
		r.Days, r.Days, r.DaySeconds, r.Seed, r.Class, bw)
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, escape(title))
	legend := []struct{ name, color string }{{"creates (demand)", "#bbbbbb"}, {"pool hits", "#2ca02c"}, {"pool misses", "#d62728"}, {"pool size", "#1f77b4"}, {"pool target", "#9467bd"}}
	for i, l := range legend {
		lx := left + i*150
		fmt.Fprintf(w, `<rect x="%d" y="32" width="12" height="8" fill="%s"/><text x="%d" y="40">%s</text>`+"\n", lx, l.color, lx+16, escape(l.name))
	}
	fmt.Fprintf(w, `<text x="%d" y="56" font-size="11" fill="#555">%s</text>`+"\n", left,
		escape("hits and misses as the hosts reported them (every 2s, so up to a bucket late); pool size: the bucket's peak"))
	for pi, m := range modes {
		py := top + pi*(panelH+gap) + 20
		x := func(t float64) float64 { return float64(left) + t/day*plotW }
		y := func(n float64) float64 { return float64(py+panelH) - n/ymax*panelH }
		head := fmt.Sprintf("%s: %d creates, hit rate %.0f%%, p50 %.0f ms, p99 %.0f ms, mean pool %.1f",
			m.Mode, m.Creates, 100*m.HitRate, m.P50Ms, m.P99Ms, m.MeanPoolSize)
		sub := m.Setup
		if m.Error != "" {
			sub = "error: " + m.Error
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", left, py-20, escape(head))
		fmt.Fprintf(w, `<text x="%d" y="%d" font-size="11" fill="#555">%s</text>`+"\n", left, py-6, escape(sub))
		fmt.Fprintf(w, `<path d="M%d,%d V%d H%d" stroke="black" fill="none"/>`+"\n", left, py, py+panelH, left+plotW)
		for i := 0; i <= 5; i++ {
			n := ymax * float64(i) / 5
			fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(n)+4, n)
			fmt.Fprintf(w, `<path d="M%d,%.1f H%d" stroke="#eee"/>`+"\n", left+1, y(n), left+plotW)
		}
		for h := 0; h <= 24; h += 3 {
			t := day * float64(h) / 24
			fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%02d:00</text>`+"\n", x(t), py+panelH+16, h)
		}
		bar := plotW * bw / day
		for _, b := range m.Series {
			bx := x(b.T)
			if b.Demand > 0 {
				fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#bbbbbb"/>`+"\n", bx, y(float64(b.Demand)), bar*0.9, y(0)-y(float64(b.Demand)))
			}
			// Hits and misses stacked in a narrower bar over the demand.
			if b.Hits > 0 {
				fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#2ca02c"/>`+"\n", bx+bar*0.25, y(float64(b.Hits)), bar*0.4, y(0)-y(float64(b.Hits)))
			}
			if b.Misses > 0 {
				fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d62728"/>`+"\n", bx+bar*0.25, y(float64(b.Hits+b.Misses)), bar*0.4, y(float64(b.Hits))-y(float64(b.Hits+b.Misses)))
			}
		}
		line := func(val func(ReplayBucket) float64) string {
			var sb strings.Builder
			for i, b := range m.Series {
				cmd := "L"
				if i == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&sb, "%s%.1f,%.1f H%.1f ", cmd, x(b.T), y(val(b)), x(b.T)+bar)
			}
			return strings.TrimSpace(sb.String())
		}
		if len(m.Series) > 0 {
			fmt.Fprintf(w, `<path d="%s" stroke="#9467bd" stroke-width="1.5" stroke-dasharray="4 3" fill="none"/>`+"\n", line(func(b ReplayBucket) float64 { return b.Target }))
			fmt.Fprintf(w, `<path d="%s" stroke="#1f77b4" stroke-width="2" fill="none"/>`+"\n", line(func(b ReplayBucket) float64 { return b.PoolSize }))
		}
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
