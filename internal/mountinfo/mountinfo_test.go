package mountinfo

import (
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:              "/plain",
		`/a\040b`:             "/a b",
		`/tab\011x\012y\134z`: "/tab\tx\ny\\z",
		`/end\040`:            "/end ",
		`/short\04`:           `/short\04`,
		`/notoctal\09x`:       `/notoctal\09x`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnder(t *testing.T) {
	table := strings.Join([]string{
		`22 1 0:21 / /proc rw - proc proc rw`,
		`40 27 0:4 net:[1] /s/sb/ns/net rw - nsfs nsfs rw`,
		`41 27 0:50 / /s/sb rw - tmpfs tmpfs rw`,
		`42 27 0:51 / /s/sb/volumes/my\040vol rw - tmpfs tmpfs rw`,
		`43 27 0:52 / /s/sbx rw - tmpfs tmpfs rw`,
		`44 27 0:52 / /s/sb/ns/net rw - nsfs nsfs rw`,
		`short line`,
	}, "\n")
	got, err := under(strings.NewReader(table), "/s/sb/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/s/sb/volumes/my vol", "/s/sb/ns/net", "/s/sb/ns/net", "/s/sb"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("under = %q, want %q", got, want)
	}
}
