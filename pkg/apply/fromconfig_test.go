package apply

import (
	"strings"
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/config"
)

func TestOptionsFromConfig(t *testing.T) {
	cfg := config.Apply{InterceptPolicy: "delete=apply+archive", NamespaceMap: "bar.foo=bar_dr.foo", MaxBulkOps: 50,
		Archive: config.Archive{Bucket: "b", Prefix: "p/"}}
	opts, err := OptionsFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := opts.Policy.For(changeevent.Delete); !a.Apply || !a.Archive {
		t.Errorf("delete policy = %+v, want apply+archive", a)
	}
	if got := opts.NamespaceMap.Map(changeevent.Namespace{DB: "bar", Coll: "foo"}); got.String() != "bar_dr.foo" {
		t.Errorf("bar.foo maps to %s", got)
	}
	if opts.MaxBulkOps != 50 || opts.ArchivePrefix != "p/" || opts.ClaimCheckBucket != "b" {
		t.Errorf("options %+v", opts)
	}

	_, err = OptionsFromConfig(config.Apply{InterceptPolicy: "delete=keep", NamespaceMap: "bar=bar_dr.foo"})
	for _, want := range []string{"INTERCEPT_POLICY", "NAMESPACE_MAP"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
