package images

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// bar is one bar of a chart.
type bar struct {
	label string
	value float64
	color string
}

// barChartSVG draws horizontal bars on a log scale (the values span from
// tens of milliseconds to tens of seconds), each labelled with its value.
func barChartSVG(title, axis string, bars []bar) []byte {
	const (
		width, left, right, top, rowH, barH = 900, 260, 90, 50, 34, 22
	)
	height := top + rowH*len(bars) + 50
	plotW := float64(width - left - right)
	lo, hi := math.Inf(1), 0.0
	for _, b := range bars {
		if b.value > 0 {
			lo, hi = math.Min(lo, b.value), math.Max(hi, b.value)
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	x := func(v float64) float64 {
		if v <= lo {
			return 0
		}
		return (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo)) * plotW
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", width, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", 10, html.EscapeString(title))
	// Decade grid lines.
	for d := lo; d <= hi*1.0001; d *= 10 {
		gx := float64(left) + x(d)
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", gx, top-6, gx, top+rowH*len(bars))
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", gx, top+rowH*len(bars)+16, fmtMs(d))
	}
	for i, b := range bars {
		y := top + i*rowH
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH-6, html.EscapeString(b.label))
		w := x(b.value)
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, math.Max(w, 1), barH, b.color)
		fmt.Fprintf(&s, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(left)+w+6, y+barH-6, fmtMs(b.value))
	}
	fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", left+int(plotW/2), height-10, html.EscapeString(axis))
	s.WriteString("</svg>\n")
	return []byte(s.String())
}

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}
