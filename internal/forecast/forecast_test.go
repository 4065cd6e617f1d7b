package forecast

import (
	"math"
	"testing"
)

// spiky is a sparse daily-like trace: a quiet baseline with one spike of
// height peak at phase spikeAt of every season.
func spiky(seasons, m, spikeAt int, base, peak float64) []float64 {
	var out []float64
	for s := 0; s < seasons; s++ {
		for i := 0; i < m; i++ {
			v := base
			if i == spikeAt {
				v = peak
			}
			out = append(out, v)
		}
	}
	return out
}

func TestSeasonalSpikeIsForecastAhead(t *testing.T) {
	const m, spikeAt = 24, 18
	hist := spiky(3, m, spikeAt, 1, 300)
	// The last bucket is three before the spike's phase (fourth season).
	hist = append(hist, hist[:spikeAt-2]...)
	r := Forecast(hist, 5, DefaultParams(m))
	if !r.Seasonal {
		t.Fatal("want a seasonal model with three seasons of history")
	}
	// h=3 is the spike's phase.
	peakAt, peak := 0, 0.0
	for i, p := range r.Points {
		if p > peak {
			peakAt, peak = i+1, p
		}
	}
	if peakAt != 3 {
		t.Fatalf("peak forecast at h=%d, want 3 (points %v)", peakAt, r.Points)
	}
	if peak < 250 || peak > 350 {
		t.Fatalf("spike forecast %.1f, want about 300 (points %v)", peak, r.Points)
	}
	for i, p := range r.Points {
		if i+1 != 3 && p > 20 {
			t.Fatalf("h=%d forecast %.1f off-spike, want about 1 (points %v)", i+1, p, r.Points)
		}
	}
	if d := Demand(r); d < 250 {
		t.Fatalf("demand %d, want the spike covered", d)
	}
	// Right after the spike the window no longer holds it.
	after := append(append([]float64{}, hist...), hist[spikeAt-2:spikeAt+1]...)
	r = Forecast(after, 3, DefaultParams(m))
	if r.Max() > 50 {
		t.Fatalf("after the spike: forecast %v, want the baseline", r.Points)
	}
}

func TestFlat(t *testing.T) {
	hist := make([]float64, 100)
	for i := range hist {
		hist[i] = 10
	}
	for _, m := range []int{0, 24} {
		r := Forecast(hist, 4, DefaultParams(m))
		for _, p := range r.Points {
			if math.Abs(p-10) > 0.5 {
				t.Fatalf("season %d: flat 10 forecast as %v", m, r.Points)
			}
		}
		if d := Demand(r); d != 10 {
			t.Fatalf("season %d: demand %d, want 10", m, d)
		}
	}
}

func TestSparse(t *testing.T) {
	// Mostly zeros with an occasional single create at no fixed phase.
	hist := make([]float64, 96)
	for _, i := range []int{5, 31, 60, 77} {
		hist[i] = 1
	}
	r := Forecast(hist, 4, DefaultParams(24))
	for _, p := range r.Points {
		if p < 0 || math.IsNaN(p) || p > 1 {
			t.Fatalf("sparse forecast %v: want small, finite, non-negative", r.Points)
		}
	}
	if d := Demand(r); d > 2 {
		t.Fatalf("demand %d for a nearly idle series", d)
	}
	// All zeros: nothing.
	if d := Demand(Forecast(make([]float64, 50), 3, DefaultParams(24))); d != 0 {
		t.Fatalf("demand %d for an idle series", d)
	}
}

func TestColdStart(t *testing.T) {
	if r := Forecast(nil, 3, DefaultParams(24)); len(r.Points) != 3 || r.Max() != 0 {
		t.Fatalf("no history: %+v", r)
	}
	// Less than a season: the recent rate, no seasonality.
	hist := []float64{0, 0, 5, 6, 5, 6, 5}
	r := Forecast(hist, 3, DefaultParams(24))
	if r.Seasonal {
		t.Fatal("seasonal model with less than one season")
	}
	for _, p := range r.Points {
		if p < 3 || p > 8 {
			t.Fatalf("recent rate ~5.5 forecast as %v", r.Points)
		}
	}
	// A ramp: the damped trend follows it without running away.
	ramp := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	r = Forecast(ramp, 10, DefaultParams(24))
	if r.Points[0] < 6 || r.Points[9] > 20 {
		t.Fatalf("ramp forecast %v", r.Points)
	}
	// One bucket only.
	if r := Forecast([]float64{4}, 2, DefaultParams(24)); r.Points[0] != 4 {
		t.Fatalf("single point forecast %v", r.Points)
	}
}

func TestSpikeThatStopsDecays(t *testing.T) {
	const m = 12
	hist := spiky(2, m, 6, 0, 100)
	hist = append(hist, make([]float64, 4*m)...) // the spike stopped coming
	hist = append(hist, make([]float64, 3)...)
	r := Forecast(hist, 4, DefaultParams(m))
	if r.Max() > 30 {
		t.Fatalf("a spike gone for four seasons is still forecast: %v", r.Points)
	}
}

func TestBadParamsFallBack(t *testing.T) {
	hist := spiky(2, 8, 3, 1, 20)
	r := Forecast(hist, 2, Params{Season: 8, Alpha: -1, Beta: 2, Gamma: math.NaN(), Phi: 0})
	for _, p := range r.Points {
		if math.IsNaN(p) || p < 0 {
			t.Fatalf("bad params gave %v", r.Points)
		}
	}
}
