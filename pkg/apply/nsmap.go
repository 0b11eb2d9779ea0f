package apply

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// NamespaceMap renames namespaces on their way to DR (NAMESPACE_MAP): a collection-level entry
// (bar.foo=bar_dr.foo) wins over a database-level one (bar=bar_dr), which keeps the collection
// name. Namespaces without an entry are written under their own name. The zero map maps nothing.
type NamespaceMap struct {
	colls map[changeevent.Namespace]changeevent.Namespace
	dbs   map[string]string
}

// Map returns the DR namespace of a primary namespace.
func (m NamespaceMap) Map(ns changeevent.Namespace) changeevent.Namespace {
	if ns.Coll != "" {
		if to, ok := m.colls[ns]; ok {
			return to
		}
	}
	if db, ok := m.dbs[ns.DB]; ok {
		return changeevent.Namespace{DB: db, Coll: ns.Coll}
	}
	return ns
}

// Targets reports whether the map writes into database db.
func (m NamespaceMap) Targets(db string) bool {
	for _, to := range m.colls {
		if to.DB == db {
			return true
		}
	}
	for _, to := range m.dbs {
		if to == db {
			return true
		}
	}
	return false
}

// DatabaseCollections returns the DR namespaces that hold the collections of primary database db,
// given the collections that exist in DR (list): those of db's DR database that no collection-level
// entry takes elsewhere or brings in from another database, and the targets of db's
// collection-level entries. Each comes with its primary collection name.
func (m NamespaceMap) DatabaseCollections(db string, list func(drDB string) ([]string, error)) (map[changeevent.Namespace]string, error) {
	out := map[changeevent.Namespace]string{}
	drDB := m.Map(changeevent.Namespace{DB: db}).DB
	colls, err := list(drDB)
	if err != nil {
		return nil, err
	}
	for _, c := range colls {
		dr := changeevent.Namespace{DB: drDB, Coll: c}
		if m.Map(changeevent.Namespace{DB: db, Coll: c}) != dr {
			continue // db's collection c is mapped elsewhere
		}
		foreign := false
		for from, to := range m.colls {
			if to == dr && from.DB != db {
				foreign = true
			}
		}
		if !foreign {
			out[dr] = c
		}
	}
	for from, to := range m.colls {
		if from.DB != db {
			continue
		}
		have, err := list(to.DB)
		if err != nil {
			return nil, err
		}
		for _, c := range have {
			if c == to.Coll {
				out[to] = from.Coll
			}
		}
	}
	return out, nil
}

// String renders the map in the form ParseNamespaceMap reads, sorted.
func (m NamespaceMap) String() string {
	var items []string
	for from, to := range m.colls {
		items = append(items, from.String()+"="+to.String())
	}
	for from, to := range m.dbs {
		items = append(items, from+"="+to)
	}
	sort.Strings(items)
	return strings.Join(items, ",")
}

// ParseNamespaceMap reads comma-separated src=dst pairs, e.g. "bar.foo=bar_dr.foo,bar=bar_dr".
// Both sides of a pair are collections (db.coll) or both are databases. Every problem is
// reported, joined in one error.
func ParseNamespaceMap(s string) (NamespaceMap, error) {
	m := NamespaceMap{colls: map[changeevent.Namespace]changeevent.Namespace{}, dbs: map[string]string{}}
	var errs []error
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		src, dst, ok := strings.Cut(item, "=")
		src, dst = strings.TrimSpace(src), strings.TrimSpace(dst)
		if !ok {
			errs = append(errs, fmt.Errorf("namespace map item %q is not src=dst", item))
			continue
		}
		from, err1 := parseNamespace(src)
		to, err2 := parseNamespace(dst)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, fmt.Errorf("namespace map item %q: %w", item, err))
			continue
		}
		if (from.Coll == "") != (to.Coll == "") {
			errs = append(errs, fmt.Errorf("namespace map item %q maps a database to a collection or back; use db=db or db.coll=db.coll", item))
			continue
		}
		if from.Coll == "" {
			if _, dup := m.dbs[from.DB]; dup {
				errs = append(errs, fmt.Errorf("namespace map names %q twice", src))
				continue
			}
			m.dbs[from.DB] = to.DB
			continue
		}
		if _, dup := m.colls[from]; dup {
			errs = append(errs, fmt.Errorf("namespace map names %q twice", src))
			continue
		}
		m.colls[from] = to
	}
	if len(errs) > 0 {
		return NamespaceMap{}, errors.Join(errs...)
	}
	return m, nil
}

// parseNamespace reads "db" or "db.coll". A database name cannot hold a dot, so the first dot
// separates the two; a collection name may hold more dots.
func parseNamespace(s string) (changeevent.Namespace, error) {
	db, coll, hasColl := strings.Cut(s, ".")
	if db == "" || strings.ContainsAny(db, "/\\ \"$*<>:|?\x00") {
		return changeevent.Namespace{}, fmt.Errorf("%q has no valid database name", s)
	}
	if hasColl && (coll == "" || strings.ContainsAny(coll, "$\x00")) {
		return changeevent.Namespace{}, fmt.Errorf("%q has no valid collection name", s)
	}
	return changeevent.Namespace{DB: db, Coll: coll}, nil
}
