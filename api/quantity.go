package api

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Quantity is an amount of memory or storage in bytes. On the wire it is a
// JSON number of bytes, or a string with a Kubernetes suffix ("256Mi",
// "1G", "512k"); ECI-style fractional GiB go through ParseGiB.
type Quantity int64

var quantitySuffixes = []struct {
	suffix string
	mult   float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
}

// ParseQuantity parses "256Mi", "1.5Gi", "1000", "2G".
func ParseQuantity(s string) (Quantity, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty quantity")
	}
	mult := 1.0
	num := s
	for _, q := range quantitySuffixes {
		if strings.HasSuffix(s, q.suffix) {
			mult = q.mult
			num = strings.TrimSuffix(s, q.suffix)
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid quantity %q: want a number of bytes or a value such as 256Mi or 1Gi", s)
	}
	v := f * mult
	if v < 0 {
		return 0, fmt.Errorf("invalid quantity %q: must not be negative", s)
	}
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid quantity %q: too large", s)
	}
	return Quantity(math.Ceil(v)), nil
}

// MustQuantity is ParseQuantity for constants; it panics on error.
func MustQuantity(s string) Quantity {
	q, err := ParseQuantity(s)
	if err != nil {
		panic(err)
	}
	return q
}

// String renders q with the largest binary suffix that divides it.
func (q Quantity) String() string {
	v := int64(q)
	for _, u := range []struct {
		s string
		n int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if v != 0 && v%u.n == 0 {
			return strconv.FormatInt(v/u.n, 10) + u.s
		}
	}
	return strconv.FormatInt(v, 10)
}

// MarshalJSON writes q as a string with a suffix.
func (q Quantity) MarshalJSON() ([]byte, error) {
	return json.Marshal(q.String())
}

// UnmarshalJSON accepts a number of bytes or a suffixed string.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseQuantity(s)
		if err != nil {
			return err
		}
		*q = v
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("invalid quantity %s: want a number of bytes or a string such as \"256Mi\"", b)
	}
	if f < 0 || f > math.MaxInt64/2 || math.IsNaN(f) {
		return fmt.Errorf("invalid quantity %s: out of range", b)
	}
	*q = Quantity(f)
	return nil
}

// ParseCPU parses a CPU amount: "0.5", "500m", "2" into millicores.
func ParseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "m") {
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "m"), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid cpu %q: want cores such as 0.5 or millicores such as 500m", s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f > 1e6 {
		return 0, fmt.Errorf("invalid cpu %q: want cores such as 0.5 or millicores such as 500m", s)
	}
	return int64(math.Round(f * 1000)), nil
}

// CPU is an amount of CPU in millicores. On the wire it is a number of cores
// (0.5) or a string ("0.5", "500m").
type CPU int64

// Cores returns c in cores.
func (c CPU) Cores() float64 { return float64(c) / 1000 }

// String renders c as cores.
func (c CPU) String() string { return strconv.FormatFloat(c.Cores(), 'f', -1, 64) }

// MarshalJSON writes c as a number of cores.
func (c CPU) MarshalJSON() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalJSON accepts cores as a number or string, or millicores ("500m").
func (c *CPU) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParseCPU(s)
	if err != nil {
		return err
	}
	*c = CPU(v)
	return nil
}
