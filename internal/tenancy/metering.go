package tenancy

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

const gib = float64(1 << 30)

// Price returns the hourly price of a shape from the price table.
func (m *Manager) Price(milliCPU, memory int64, spot bool) api.Price {
	up := m.prices.OnDemand
	if spot {
		up = m.prices.Spot
	}
	p := api.Price{Currency: m.prices.Currency, VCPU: float64(milliCPU) / 1000, MemoryGiB: float64(memory) / gib, Spot: spot}
	p.VCPUHour = round6(p.VCPU * up.VCPUHour)
	p.MemHour = round6(p.MemoryGiB * up.GiBHour)
	p.Hourly = round6(p.VCPUHour + p.MemHour)
	return p
}

func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// interval returns a group's billing interval as it stands: the start,
// and the end if the group has ended (terminal, or its delete requested at
// deletedAt). ok is false for a group never placed on a host.
func interval(g *api.Group, deletedAt *time.Time) (start time.Time, end *time.Time, ok bool) {
	if g.ScheduledAt == nil {
		return time.Time{}, nil, false
	}
	start = *g.ScheduledAt
	if g.MeterFrom != nil && g.MeterFrom.After(start) {
		start = *g.MeterFrom // an update changed the shape then
	}
	if g.Status.Terminal() && g.FinishedAt != nil {
		e := *g.FinishedAt
		end = &e
	}
	if deletedAt != nil && (end == nil || deletedAt.Before(*end)) {
		e := *deletedAt
		end = &e
	}
	if end != nil && end.Before(start) {
		e := start
		end = &e
	}
	return start, end, true
}

func entryFor(g *api.Group, start, end time.Time) *store.LedgerEntry {
	r := g.Spec.Requests()
	return &store.LedgerEntry{AccountID: g.AccountID, GroupID: g.ID, GroupName: g.Name, MilliCPU: r.MilliCPU, Memory: r.Memory,
		Spot: api.IsSpot(g.Spec.SpotStrategy), Start: start.UTC(), End: end.UTC()}
}

// CloseDeleted closes the billing interval of a group whose delete was
// just requested: billing stops now (or when it ended, if earlier).
func (m *Manager) CloseDeleted(ctx context.Context, g *api.Group) error {
	now := m.now().UTC()
	start, end, ok := interval(g, &now)
	if !ok {
		return nil
	}
	_, err := m.store.CloseInterval(ctx, entryFor(g, start, *end))
	return err
}

// MeterRound closes the intervals of groups that have ended by reaching a
// terminal status. The leader runs it every scheduling round; running it
// twice, or on two replicas, writes each interval once.
func (m *Manager) MeterRound(ctx context.Context, groups []*api.Group) error {
	for _, g := range groups {
		start, end, ok := interval(g, nil)
		if !ok || end == nil {
			continue
		}
		closed, err := m.store.IntervalClosed(ctx, g.AccountID, g.ID, start.UTC())
		if err != nil {
			return err
		}
		if !closed {
			if _, err := m.store.CloseInterval(ctx, entryFor(g, start, *end)); err != nil {
				return err
			}
		}
	}
	return nil
}

// billedSeconds clips [start, end) rounded out to whole seconds to
// [from, to) and returns the seconds and the clipped bounds.
func billedSeconds(start, end, from, to time.Time) (int64, time.Time, time.Time) {
	s := start.Truncate(time.Second)
	e := end.Truncate(time.Second)
	if e.Before(end) {
		e = e.Add(time.Second)
	}
	if s.Before(from) {
		s = from
	}
	if e.After(to) {
		e = to
	}
	if !e.After(s) {
		return 0, s, s
	}
	return int64(e.Sub(s) / time.Second), s, e
}

// Report meters an account's use over [from, to) ("" account: every
// account; only admins may ask for that). groups is the current group
// list; the closed intervals come from the ledger.
func (m *Manager) Report(ctx context.Context, accountID string, groups []*api.Group, from, to time.Time) (*api.UsageReport, error) {
	if !to.After(from) {
		return nil, errdefs.Invalid("the report period is empty: 'to' must be after 'from'")
	}
	from, to = from.UTC().Truncate(time.Second), to.UTC().Truncate(time.Second)
	now := m.now().UTC()
	ledger, err := m.store.ListLedger(ctx, accountID)
	if err != nil {
		return nil, err
	}
	closed := map[string]bool{}
	entries := make([]*store.LedgerEntry, 0, len(ledger))
	for _, e := range ledger {
		closed[e.GroupID+"/"+strconv.FormatInt(e.Start.UnixNano(), 10)] = true
		entries = append(entries, e)
	}
	open := map[*store.LedgerEntry]bool{}
	for _, g := range groups {
		if accountID != "" && g.AccountID != accountID {
			continue
		}
		start, end, ok := interval(g, nil)
		if !ok || closed[g.ID+"/"+strconv.FormatInt(start.UTC().UnixNano(), 10)] {
			continue
		}
		e := now
		if end != nil {
			e = *end
		}
		le := entryFor(g, start, e)
		open[le] = end == nil
		entries = append(entries, le)
	}
	rep := &api.UsageReport{AccountID: accountID, From: from, To: to, Currency: m.prices.Currency, Lines: []api.UsageLine{}}
	for _, e := range entries {
		secs, s, en := billedSeconds(e.Start, e.End, from, to)
		if secs == 0 {
			continue
		}
		up := m.prices.OnDemand
		if e.Spot {
			up = m.prices.Spot
		}
		vcpu := float64(e.MilliCPU) / 1000
		mem := float64(e.Memory) / gib
		l := api.UsageLine{AccountID: e.AccountID, GroupID: e.GroupID, GroupName: e.GroupName, Spot: e.Spot, VCPU: vcpu, MemoryGiB: round6(mem),
			Start: s, End: en, Open: open[e], Seconds: secs, VCPUSeconds: round6(vcpu * float64(secs)), GiBSeconds: round6(mem * float64(secs))}
		l.Cost = round6(l.VCPUSeconds*up.VCPUHour/3600 + l.GiBSeconds*up.GiBHour/3600)
		rep.Lines = append(rep.Lines, l)
		rep.VCPUSeconds += l.VCPUSeconds
		rep.GiBSeconds += l.GiBSeconds
		rep.Cost += l.Cost
	}
	sort.Slice(rep.Lines, func(i, j int) bool {
		a, b := rep.Lines[i], rep.Lines[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.Before(b.Start)
		}
		return a.GroupID < b.GroupID
	})
	rep.VCPUSeconds, rep.GiBSeconds, rep.Cost = round6(rep.VCPUSeconds), round6(rep.GiBSeconds), round6(rep.Cost)
	return rep, nil
}

// WriteCSV writes a report as CSV, one line per interval and a total.
func WriteCSV(w io.Writer, r *api.UsageReport) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"account", "group_id", "group_name", "spot", "vcpu", "memory_gib", "start", "end", "open", "seconds", "vcpu_seconds", "gib_seconds", "cost", "currency"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, l := range r.Lines {
		_ = cw.Write([]string{l.AccountID, l.GroupID, l.GroupName, strconv.FormatBool(l.Spot), f(l.VCPU), f(l.MemoryGiB),
			l.Start.Format(time.RFC3339), l.End.Format(time.RFC3339), strconv.FormatBool(l.Open), fmt.Sprint(l.Seconds),
			f(l.VCPUSeconds), f(l.GiBSeconds), f(l.Cost), r.Currency})
	}
	_ = cw.Write([]string{"TOTAL", "", "", "", "", "", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), "", "",
		f(r.VCPUSeconds), f(r.GiBSeconds), f(r.Cost), r.Currency})
	cw.Flush()
	return cw.Error()
}
