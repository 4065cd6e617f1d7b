package api

import "testing"

func TestParsePoolTargets(t *testing.T) {
	got, err := ParsePoolTargets(" c0.25=3, c1=0 ,")
	if err != nil || got["c0.25"] != 3 || got["c1"] != 0 || len(got) != 2 {
		t.Fatalf("%v %v", got, err)
	}
	if s := got.String(); s != "c0.25=3,c1=0" {
		t.Fatalf("String() = %q", s)
	}
	for _, bad := range []string{"c0.25", "c9=1", "c1=-1", "c1=x", "c1=1000001", "=3"} {
		if _, err := ParsePoolTargets(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if got, err := ParsePoolTargets(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
}

func TestShapeClassesOrdered(t *testing.T) {
	for i := 1; i < len(ShapeClasses); i++ {
		a, b := ShapeClasses[i-1], ShapeClasses[i]
		if b.MilliCPU <= a.MilliCPU || b.Memory <= a.Memory {
			t.Fatalf("class %s does not cover %s", b.Name, a.Name)
		}
	}
	// The smallest group (defaults: 250m, 256Mi) has a class.
	if ShapeClassOf(Resources{MilliCPU: 250, Memory: 256 << 20}) != "c0.25" {
		t.Fatal("default group has no class")
	}
	var h *HostPool
	if s, tg, hi, mi := h.Totals(); s+tg != 0 || hi+mi != 0 {
		t.Fatal("nil pool totals")
	}
}
