package apply

import (
	"strings"
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr []string
	}{
		{"", DefaultPolicy.String(), nil},
		{"delete=apply", "delete=apply,drop=archive,rename=archive,dropDatabase=archive", nil},
		{" delete = apply+archive , dropDatabase=apply ", "delete=apply+archive,drop=archive,rename=archive,dropDatabase=apply", nil},
		{"drop=archive+apply", "delete=archive,drop=apply+archive,rename=archive,dropDatabase=archive", nil},
		{"insert=archive,delete=keep,drop", "", []string{`"insert=archive": operation must be`, `action "keep" must be`, `"drop" is not op=action`}},
		{"delete=apply,delete=archive", "", []string{`names "delete" twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePolicy(tt.in)
			if tt.wantErr == nil {
				if err != nil || p.String() != tt.want {
					t.Fatalf("got %s, %v; want %s", p, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error for %q", tt.in)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestParseNamespaceMap(t *testing.T) {
	m, err := ParseNamespaceMap("bar.foo=bar_dr.foo2, bar=bar_dr, x.a.b=y.c.d")
	if err != nil {
		t.Fatal(err)
	}
	maps := []struct{ from, to changeevent.Namespace }{
		{changeevent.Namespace{DB: "bar", Coll: "foo"}, changeevent.Namespace{DB: "bar_dr", Coll: "foo2"}},
		{changeevent.Namespace{DB: "bar", Coll: "exa"}, changeevent.Namespace{DB: "bar_dr", Coll: "exa"}},
		{changeevent.Namespace{DB: "bar"}, changeevent.Namespace{DB: "bar_dr"}},
		{changeevent.Namespace{DB: "x", Coll: "a.b"}, changeevent.Namespace{DB: "y", Coll: "c.d"}},
		{changeevent.Namespace{DB: "other", Coll: "foo"}, changeevent.Namespace{DB: "other", Coll: "foo"}},
	}
	for _, tt := range maps {
		if got := m.Map(tt.from); got != tt.to {
			t.Errorf("Map(%s) = %s, want %s", tt.from, got, tt.to)
		}
	}
	if m.String() != "bar.foo=bar_dr.foo2,bar=bar_dr,x.a.b=y.c.d" {
		t.Errorf("String() = %s", m)
	}

	errs := []struct{ in, want string }{
		{"bar", `"bar" is not src=dst`},
		{"bar.foo=bar_dr", "maps a database to a collection"},
		{"bar=bar_dr.foo", "maps a database to a collection"},
		{"=x", "no valid database name"},
		{"a$b=c", "no valid database name"},
		{"bar.=x.y", "no valid collection name"},
		{"bar=x,bar=y", `names "bar" twice`},
	}
	for _, tt := range errs {
		if _, err := ParseNamespaceMap(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseNamespaceMap(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
	var zero NamespaceMap
	if got := zero.Map(fooNS); got != fooNS {
		t.Errorf("zero map changed %s to %s", fooNS, got)
	}
}

func TestKeyOfTreatsEqualNumbersAsOneID(t *testing.T) {
	same := []any{int32(1), int64(1), 1.0}
	for _, v := range same {
		if KeyOf(idOf(t, v)) != KeyOf(idOf(t, int32(1))) {
			t.Errorf("%T 1 has another key", v)
		}
	}
	differ := []any{"1", 1.5, int64(2)}
	for _, v := range differ {
		if KeyOf(idOf(t, v)) == KeyOf(idOf(t, int32(1))) {
			t.Errorf("%T %v has the key of 1", v, v)
		}
	}
}
