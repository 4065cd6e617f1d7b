// Package forecast predicts the next few buckets of a create-count series
// (creates per account × image × shape class per time bucket), so that the
// control plane can fill warm pools ahead of demand. It is pure: a slice
// of counts in, a forecast out; the caller owns the clock and the store.
//
// # Method: damped additive Holt-Winters
//
// A series is level + trend + a seasonal offset per phase of the season
// (one day, by default, in minute buckets):
//
//	level_t  = α (x_t − s_{t−m}) + (1−α)(level_{t−1} + φ trend_{t−1})
//	trend_t  = β (level_t − level_{t−1}) + (1−β) φ trend_{t−1}
//	s_t      = γ (x_t − level_t) + (1−γ) s_{t−m}
//	ŷ_{t+h}  = level_t + (φ + … + φ^h) trend_t + s_{t+h−m·k}
//
// Why this and why additive:
//   - Creation patterns are "recent rate plus periodicity": a tenant's
//     baseline drifts (level, trend) and its jobs fire at the same time
//     every day (season). Holt-Winters is the smallest model with exactly
//     those parts, runs in O(n) with no fitting library, and is easy to
//     reason about when a forecast looks wrong.
//   - Additive, not multiplicative, seasonality: counts per bucket are
//     sparse — mostly 0, with spikes. A multiplicative season divides by
//     the level, which is ~0 between spikes, so its seasonal factors blow
//     up or vanish; an additive offset of "+300 at 09:00" is what the
//     data says and stays stable.
//   - The trend is damped (φ < 1): a ramp at the start of a spike must
//     not extrapolate into an ever-growing forecast a few buckets on.
//   - Sparse counts: nothing is logged or divided, zeros are ordinary
//     values, and the forecast is clamped at 0. A spike that happens in
//     one season only is learned with weight γ and decays over the next
//     seasons if it does not come back.
//
// Cold start: with less than one full season of history there is no
// seasonal estimate, so Forecast falls back to Holt's linear method
// (level + damped trend) over what there is, which is "the recent rate".
// With no history at all it forecasts 0. With one to two seasons, the
// seasonal offsets start from the first season's deviations from its
// mean; from two seasons on, the initial trend is the change between the
// first two seasons' means.
//
// Fixed smoothing constants (DefaultParams) rather than a fit per series:
// the planner forecasts every series every bucket, and a grid search per
// series would cost more than the forecast is worth; the constants below
// weight the last few buckets for the level and the last few seasons for
// the offsets, which is what a daily pattern needs.
package forecast

import "math"

// Params are the smoothing constants.
type Params struct {
	// Season is the number of buckets in one season (e.g. 1440 one-minute
	// buckets for a day). 0 or 1 disables seasonality.
	Season int
	// Alpha (level), Beta (trend) and Gamma (season) are in (0, 1); Phi in
	// (0, 1] damps the trend.
	Alpha, Beta, Gamma, Phi float64
}

// DefaultParams returns the constants the planner uses, for a season of
// the given length.
func DefaultParams(season int) Params {
	return Params{Season: season, Alpha: 0.3, Beta: 0.05, Gamma: 0.4, Phi: 0.8}
}

// Result is a forecast.
type Result struct {
	// Points are the forecast counts of the next buckets, h = 1…horizon,
	// never negative.
	Points []float64
	// Error is the model's recent one-step-ahead error: the mean absolute
	// error, exponentially weighted (about the last ten buckets count), in
	// counts per bucket. Recent, so that an old spike's surprise does not
	// keep a quiet series' pool up for a whole season.
	Error float64
	// Seasonal says whether a seasonal model was used (at least one full
	// season of history).
	Seasonal bool
}

// Max is the largest forecast point (0 for none).
func (r Result) Max() float64 {
	m := 0.0
	for _, p := range r.Points {
		m = math.Max(m, p)
	}
	return m
}

// Forecast predicts the next horizon buckets after history (oldest first,
// the last element being the most recent complete bucket).
func Forecast(history []float64, horizon int, p Params) Result {
	res := Result{Points: make([]float64, max(horizon, 0))}
	n := len(history)
	if n == 0 || horizon <= 0 {
		return res
	}
	p = sane(p)
	m := p.Season
	if m < 2 || n < m {
		return holt(history, horizon, p)
	}
	res.Seasonal = true

	// Initial state from the first season (and the second, for the trend).
	level := mean(history[:m])
	trend := 0.0
	if n >= 2*m {
		trend = (mean(history[m:2*m]) - level) / float64(m)
	}
	season := make([]float64, m)
	for i := 0; i < m; i++ {
		season[i] = history[i] - level
	}
	// Run the recursions over the rest; the first season only seeded the
	// state, so its own one-step errors are not counted.
	var mae errAvg
	for t := m; t < n; t++ {
		x := history[t]
		si := t % m
		pred := level + p.Phi*trend + season[si]
		mae.add(math.Abs(x - math.Max(pred, 0)))
		prevLevel := level
		level = p.Alpha*(x-season[si]) + (1-p.Alpha)*(level+p.Phi*trend)
		trend = p.Beta*(level-prevLevel) + (1-p.Beta)*p.Phi*trend
		season[si] = p.Gamma*(x-level) + (1-p.Gamma)*season[si]
	}
	res.Error = mae.v
	damp := 0.0
	phiH := 1.0
	for h := 1; h <= horizon; h++ {
		phiH *= p.Phi
		damp += phiH
		v := level + damp*trend + season[(n+h-1)%m]
		res.Points[h-1] = math.Max(v, 0)
	}
	return res
}

// holt is level + damped trend: the recent rate, for histories shorter
// than one season.
func holt(history []float64, horizon int, p Params) Result {
	res := Result{Points: make([]float64, horizon)}
	level := history[0]
	trend := 0.0
	var mae errAvg
	for t := 1; t < len(history); t++ {
		x := history[t]
		pred := level + p.Phi*trend
		mae.add(math.Abs(x - math.Max(pred, 0)))
		prev := level
		level = p.Alpha*x + (1-p.Alpha)*(level+p.Phi*trend)
		trend = p.Beta*(level-prev) + (1-p.Beta)*p.Phi*trend
	}
	res.Error = mae.v
	damp, phiH := 0.0, 1.0
	for h := 1; h <= horizon; h++ {
		phiH *= p.Phi
		damp += phiH
		res.Points[h-1] = math.Max(level+damp*trend, 0)
	}
	return res
}

// errAvg is an exponentially weighted mean (weight 0.1: about the last ten
// values), started at the first value.
type errAvg struct {
	v float64
	n int
}

func (e *errAvg) add(x float64) {
	if e.n == 0 {
		e.v = x
	} else {
		e.v += 0.1 * (x - e.v)
	}
	e.n++
}

func sane(p Params) Params {
	d := DefaultParams(p.Season)
	if !(p.Alpha > 0 && p.Alpha < 1) {
		p.Alpha = d.Alpha
	}
	if !(p.Beta > 0 && p.Beta < 1) {
		p.Beta = d.Beta
	}
	if !(p.Gamma > 0 && p.Gamma < 1) {
		p.Gamma = d.Gamma
	}
	if !(p.Phi > 0 && p.Phi <= 1) {
		p.Phi = d.Phi
	}
	return p
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Demand turns a forecast into how many prepared sandboxes to hold: the
// largest forecast bucket of the window plus a margin of the model's
// usual error, rounded up. Holding the peak bucket (rather than the sum
// of the window) assumes the pool refills between buckets; the margin
// covers a spike that comes a little larger than forecast.
func Demand(r Result) int {
	peak := r.Max()
	if peak <= 0 && r.Error <= 0 {
		return 0
	}
	v := peak + r.Error
	if v < 0.5 { // noise of a nearly idle series: no pool for it
		return 0
	}
	return int(math.Ceil(v))
}
