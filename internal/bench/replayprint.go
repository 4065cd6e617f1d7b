package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// PrintReplay writes the replay's comparison as a table, then how each
// mode's pool was set up and anything that went wrong.
func PrintReplay(w io.Writer, r *ReplayResult) {
	spikes := make([]string, len(r.Spikes))
	for i, s := range r.Spikes {
		spikes[i] = fmt.Sprintf("%d at %02d:%02d over %s", s.Size, int(s.At*24), int(s.At*24*60)%60, s.Width)
	}
	fmt.Fprintf(w, "trace: seed %d, %d days of %.0fs, base %.2f/s × %.2g, spikes %s; %d creates %v; mean %.2f creates/s; class %s\n",
		r.Seed, r.Days, r.DaySeconds, r.BaseRate, r.Scale, strings.Join(spikes, ", "), r.TraceCreates, r.DayCreates, r.MeanRate, r.Class)
	fmt.Fprintf(w, "measured: day %d of %d\n\n", r.Days, r.Days)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tcreates\tfailed\thits\tmisses\thit rate\tp50 ms\tp90 ms\tp99 ms\tspike p99 ms\tmean pool\tmax pool\tleaks\t")
	for _, m := range sortedModes(r) {
		if m.Error != "" && m.Creates == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%d\t\n", m.Mode, len(m.Leaks))
			continue
		}
		rate := "-"
		if m.Hits+m.Misses > 0 {
			rate = fmt.Sprintf("%.0f%%", 100*m.HitRate)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%d\t%d\t\n", m.Mode, m.Creates, m.Failed, m.Hits, m.Misses, rate,
			m.P50Ms, m.P90Ms, m.P99Ms, m.SpikeP99Ms, m.MeanPoolSize, m.MaxPoolSize, len(m.Leaks))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, m := range sortedModes(r) {
		fmt.Fprintf(w, "%-9s %s (%.0fs)\n", m.Mode, m.Setup, m.Seconds)
		if !m.PoolReported && m.Error == "" {
			fmt.Fprintf(w, "%-9s the hosts reported no warm pool: hits and misses are unknown\n", "")
		}
		if m.Error != "" {
			fmt.Fprintf(w, "%-9s error: %s\n", "", m.Error)
		}
		for _, l := range m.Leaks {
			fmt.Fprintf(w, "%-9s left behind (removed): %s\n", "", l)
		}
	}
}
