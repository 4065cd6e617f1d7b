package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// TraceConfig describes a synthetic, time-compressed daily create trace:
// a base rate with a diurnal shape (low at night, high at noon) plus
// spikes at the same time of every day, over several days. The same
// config always gives the same trace.
type TraceConfig struct {
	Seed int64
	Days int
	// Day is how long one day lasts once compressed (2m: a day in two
	// minutes, 720× faster than real time).
	Day time.Duration
	// BaseRate is the mean rate of the diurnal part, creates per second
	// of compressed time, before Scale.
	BaseRate float64
	// Spikes happen every day at the same phase.
	Spikes []Spike
	// Scale multiplies the base rate and every spike's size.
	Scale float64
	// A group lives a uniformly random time in [LifeMin, LifeMax]
	// (compressed time) before it is deleted.
	LifeMin, LifeMax time.Duration
}

// Spike is a burst of creates at the same time of every day: Size creates
// spread uniformly over Width, starting at phase At of the day (0 is
// midnight, 0.5 noon).
type Spike struct {
	At    float64       `json:"at"`
	Size  int           `json:"size"`
	Width time.Duration `json:"width"`
}

// DefaultTrace is the replay's default: three two-minute days (two to
// train the forecaster, one measured), a morning spike of 40 and an
// evening spike of 25 on a base of 0.75 creates/s.
func DefaultTrace() TraceConfig {
	return TraceConfig{
		Seed: 1, Days: 3, Day: 2 * time.Minute, BaseRate: 0.75, Scale: 1,
		Spikes: []Spike{
			{At: 0.375, Size: 40, Width: 3 * time.Second}, // 09:00
			{At: 0.75, Size: 25, Width: 2 * time.Second},  // 18:00
		},
		LifeMin: 4 * time.Second, LifeMax: 12 * time.Second,
	}
}

// TraceEvent is one create of the trace.
type TraceEvent struct {
	// At is the time of the create from the start of the trace
	// (compressed time).
	At time.Duration
	// Day is the day it falls on, 0-based.
	Day int
	// Life is how long the group lives before it is deleted.
	Life time.Duration
	// Spike is the index of the spike it belongs to, -1 for the base.
	Spike int
}

// Validate reports a config that cannot make a trace.
func (c TraceConfig) Validate() error {
	switch {
	case c.Days < 1:
		return fmt.Errorf("days %d: want at least 1", c.Days)
	case c.Day < time.Second || c.Day%time.Second != 0:
		return fmt.Errorf("day length %s: want whole seconds, at least 1s", c.Day)
	case c.BaseRate < 0 || c.Scale <= 0:
		return fmt.Errorf("base rate %v, scale %v: want base ≥ 0 and scale > 0", c.BaseRate, c.Scale)
	case c.LifeMin <= 0 || c.LifeMax < c.LifeMin:
		return fmt.Errorf("lifetime %s..%s: want 0 < min ≤ max", c.LifeMin, c.LifeMax)
	}
	for _, s := range c.Spikes {
		if s.At < 0 || s.At >= 1 || s.Size < 0 || s.Width < 0 || s.Width > c.Day/4 {
			return fmt.Errorf("spike at %v (size %d, width %s): want 0 ≤ at < 1, size ≥ 0, width ≤ a quarter day", s.At, s.Size, s.Width)
		}
	}
	return nil
}

// Diurnal is the shape of the base rate over a day, phase in [0, 1): 0.2
// at midnight, 1.8 at noon, 1 on average.
func Diurnal(phase float64) float64 {
	return 1 - 0.8*math.Cos(2*math.Pi*phase)
}

// GenerateTrace makes the trace, sorted by time. The base part is a
// Poisson process with the diurnal rate, drawn second by second (of
// compressed time); each spike adds exactly round(Size×Scale) creates.
func GenerateTrace(c TraceConfig) ([]TraceEvent, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(c.Seed), 0x736b696666)) // "skiff"
	life := func() time.Duration {
		return c.LifeMin + time.Duration(rng.Int64N(int64(c.LifeMax-c.LifeMin)+1))
	}
	var out []TraceEvent
	daySecs := int(c.Day / time.Second)
	for d := 0; d < c.Days; d++ {
		dayStart := time.Duration(d) * c.Day
		for s := 0; s < daySecs; s++ {
			phase := (float64(s) + 0.5) / float64(daySecs)
			n := poisson(rng, c.BaseRate*c.Scale*Diurnal(phase))
			for range n {
				at := dayStart + time.Duration(s)*time.Second + time.Duration(rng.Int64N(int64(time.Second)))
				out = append(out, TraceEvent{At: at, Day: d, Life: life(), Spike: -1})
			}
		}
		for i, sp := range c.Spikes {
			start := dayStart + time.Duration(sp.At*float64(c.Day))
			n := int(math.Round(float64(sp.Size) * c.Scale))
			for range n {
				at := start
				if sp.Width > 0 {
					at += time.Duration(rng.Int64N(int64(sp.Width)))
				}
				out = append(out, TraceEvent{At: at, Day: d, Life: life(), Spike: i})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out, nil
}

// poisson draws from a Poisson distribution of mean lambda (Knuth's
// method; the trace's rates per second are small).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// MeanRate is the trace's expected creates per second over a day.
func (c TraceConfig) MeanRate() float64 {
	r := c.BaseRate * c.Scale // Diurnal averages 1
	for _, s := range c.Spikes {
		r += math.Round(float64(s.Size)*c.Scale) / c.Day.Seconds()
	}
	return r
}
