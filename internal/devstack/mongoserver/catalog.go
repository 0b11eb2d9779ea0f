package mongoserver

import (
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Databases, collections and indexes.

func init() {
	register(cmdListDatabases, false, "listDatabases")
	register(cmdListCollections, false, "listCollections")
	register(cmdCreate, false, "create")
	register(cmdDrop, false, "drop")
	register(cmdDropDatabase, false, "dropDatabase")
	register(cmdRenameCollection, false, "renameCollection")
	register(cmdCreateIndexes, false, "createIndexes")
	register(cmdListIndexes, false, "listIndexes")
	register(cmdDropIndexes, false, "dropIndexes", "deleteIndexes")
	register(cmdCollStats, false, "collStats", "dbStats")
}

// matchInfo applies an optional listing filter to an info document.
func matchInfo(q *query, info bsoncore.Document) (bool, error) {
	if q == nil {
		return true, nil
	}
	return q.matches(info)
}

func optionalQuery(c *cmdCtx) (*query, error) {
	f, err := c.doc("filter")
	if err != nil || len(f) <= 5 {
		return nil, err
	}
	return newQuery(f)
}

func cmdListDatabases(c *cmdCtx, dst []byte) ([]byte, error) {
	q, err := optionalQuery(c)
	if err != nil {
		return nil, err
	}
	nameOnly := c.boolean("nameOnly", false)
	c.e.mu.RLock()
	defer c.e.mu.RUnlock()
	var total int64
	idx, dst := bsoncore.AppendArrayElementStart(dst, "databases")
	n := 0
	for _, name := range c.e.sortedDBNames() {
		d := c.e.dbs[name]
		if len(d.colls) == 0 {
			continue
		}
		var size int64
		for _, coll := range d.colls {
			size += coll.size
		}
		b := bsoncore.NewDocumentBuilder().AppendString("name", name)
		if !nameOnly {
			b.AppendInt64("sizeOnDisk", size).AppendBoolean("empty", size == 0)
		}
		info := b.Build()
		if ok, err := matchInfo(q, info); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		total += size
		dst = bsoncore.AppendDocumentElement(dst, itoa(n), info)
		n++
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	if !nameOnly {
		dst = bsoncore.AppendInt64Element(dst, "totalSize", total)
	}
	return dst, nil
}

func cmdListCollections(c *cmdCtx, dst []byte) ([]byte, error) {
	q, err := optionalQuery(c)
	if err != nil {
		return nil, err
	}
	nameOnly := c.boolean("nameOnly", false)
	c.e.mu.RLock()
	var infos []bsoncore.Document
	if d := c.e.dbs[c.db]; d != nil {
		names := make([]string, 0, len(d.colls))
		for n := range d.colls {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			coll := d.colls[n]
			b := bsoncore.NewDocumentBuilder().AppendString("name", n).AppendString("type", "collection")
			if !nameOnly {
				b.AppendDocument("options", bsoncore.NewDocumentBuilder().Build()).
					AppendDocument("info", bsoncore.NewDocumentBuilder().
						AppendBoolean("readOnly", false).
						AppendBinary("uuid", coll.uuid.Subtype, coll.uuid.Data).Build()).
					AppendDocument("idIndex", coll.indexes[0])
			}
			info := b.Build()
			if ok, err := matchInfo(q, info); err != nil {
				c.e.mu.RUnlock()
				return nil, err
			} else if ok {
				infos = append(infos, info)
			}
		}
	}
	c.e.mu.RUnlock()
	return openCursor(c, dst, c.db+".$cmd.listCollections", &listCursor{docs: infos}, 0, false)
}

// validCollName applies MongoDB's collection naming rules.
func validCollName(name string) error {
	if name == "" || strings.HasPrefix(name, "$") || strings.ContainsAny(name, "\x00") || strings.HasPrefix(name, ".") {
		return errf(codeInvalidNamespace, "Invalid collection name: %q", name)
	}
	return nil
}

func cmdCreate(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	if err := validCollName(name); err != nil {
		return nil, err
	}
	c.e.lock()
	defer c.e.unlock()
	if _, created := c.e.createCollection(c.db, name); !created {
		return nil, errf(codeNamespaceExists, "Collection %s.%s already exists.", c.db, name)
	}
	return dst, nil
}

// dropLocked removes a collection and logs the drop. Caller holds e.mu.
func (e *engine) dropLocked(coll *collection) {
	d := e.dbs[coll.ns.db]
	delete(d.colls, coll.ns.coll)
	if len(d.colls) == 0 {
		delete(e.dbs, coll.ns.db)
	}
	e.appendEntry(oplogEntry{op: opDrop, ns: coll.ns})
}

func cmdDrop(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	c.e.lock()
	defer c.e.unlock()
	coll := c.e.collection(c.db, name)
	if coll == nil {
		return nil, errf(codeNamespaceNotFound, "ns not found")
	}
	n := len(coll.indexes)
	c.e.dropLocked(coll)
	dst = bsoncore.AppendInt32Element(dst, "nIndexesWas", int32(n))
	return bsoncore.AppendStringElement(dst, "ns", coll.ns.String()), nil
}

// cmdDropDatabase drops every collection (one drop event each, in name
// order) and then logs dropDatabase, as MongoDB does.
func cmdDropDatabase(c *cmdCtx, dst []byte) ([]byte, error) {
	c.e.lock()
	defer c.e.unlock()
	d := c.e.dbs[c.db]
	if d == nil {
		return dst, nil
	}
	names := make([]string, 0, len(d.colls))
	for n := range d.colls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.e.dropLocked(d.colls[n])
	}
	delete(c.e.dbs, c.db)
	c.e.appendEntry(oplogEntry{op: opDropDatabase, ns: &namespace{db: c.db}})
	return bsoncore.AppendStringElement(dst, "dropped", c.db), nil
}

// splitNS splits "db.coll".
func splitNS(ns string) (db, coll string, ok bool) {
	i := strings.IndexByte(ns, '.')
	if i <= 0 || i == len(ns)-1 {
		return "", "", false
	}
	return ns[:i], ns[i+1:], true
}

// cmdRenameCollection is the admin command {renameCollection: "db.a", to:
// "db.b", dropTarget}. It logs a drop of a replaced target, then the rename.
func cmdRenameCollection(c *cmdCtx, dst []byte) ([]byte, error) {
	if c.db != "admin" {
		return nil, errf(codeUnauthorized, "renameCollection may only be run against the admin database.")
	}
	from, _ := c.str("renameCollection")
	to, err := c.str("to")
	if err != nil {
		return nil, err
	}
	fdb, fcoll, ok1 := splitNS(from)
	tdb, tcoll, ok2 := splitNS(to)
	if !ok1 || !ok2 {
		return nil, errf(codeInvalidNamespace, "Invalid namespace specified '%s' -> '%s'", from, to)
	}
	if err := validCollName(tcoll); err != nil {
		return nil, err
	}
	c.e.lock()
	defer c.e.unlock()
	src := c.e.collection(fdb, fcoll)
	if src == nil {
		return nil, errf(codeNamespaceNotFound, "Source collection %s does not exist", from)
	}
	if from == to {
		return nil, errf(codeIllegalOperation, "Can't rename a collection to itself")
	}
	if target := c.e.collection(tdb, tcoll); target != nil {
		if !c.boolean("dropTarget", false) {
			return nil, errf(codeNamespaceExists, "target namespace exists")
		}
		c.e.dropLocked(target)
	}
	delete(c.e.dbs[fdb].colls, fcoll)
	if len(c.e.dbs[fdb].colls) == 0 {
		delete(c.e.dbs, fdb)
	}
	oldNS := src.ns
	// A new namespace value: oplog entries keep pointing at the old name.
	src.ns = &namespace{db: tdb, coll: tcoll}
	d := c.e.dbs[tdb]
	if d == nil {
		d = &database{name: tdb, colls: map[string]*collection{}}
		c.e.dbs[tdb] = d
	}
	d.colls[tcoll] = src
	c.e.appendEntry(oplogEntry{op: opRename, ns: oldNS, to: src.ns})
	return dst, nil
}

// cmdCreateIndexes records index specifications so listIndexes shows them.
// Only the _id index is enforced (unique); secondary indexes are metadata.
func cmdCreateIndexes(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	specs, err := c.docs("indexes")
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, errf(codeBadValue, "Must specify at least one index to create")
	}
	for _, s := range specs {
		if s.Lookup("key").Type != bson.TypeEmbeddedDocument {
			return nil, errf(codeFailedToParse, "index specification must have a key document")
		}
		if _, ok := s.Lookup("name").StringValueOK(); !ok {
			return nil, errf(codeFailedToParse, "index specification must have a name")
		}
	}
	c.e.lock()
	defer c.e.unlock()
	coll, created := c.e.createCollection(c.db, name)
	before := len(coll.indexes)
	for _, s := range specs {
		sname := s.Lookup("name").StringValue()
		exists := false
		for _, have := range coll.indexes {
			if have.Lookup("name").StringValue() == sname {
				exists = true
				break
			}
		}
		if exists {
			continue
		}
		if ix, ok := newUniqueIndex(s); ok {
			if err := coll.buildUnique(ix); err != nil {
				return nil, err
			}
			coll.uniques = append(coll.uniques, ix)
		}
		idx, spec := bsoncore.AppendDocumentStart(nil)
		spec = bsoncore.AppendInt32Element(spec, "v", 2)
		elems, _ := s.Elements()
		for _, e := range elems {
			if e.Key() != "v" && e.Key() != "ns" {
				spec = append(spec, e...)
			}
		}
		spec, _ = bsoncore.AppendDocumentEnd(spec, idx)
		coll.indexes = append(coll.indexes, spec)
	}
	dst = bsoncore.AppendBooleanElement(dst, "createdCollectionAutomatically", created)
	dst = bsoncore.AppendInt32Element(dst, "numIndexesBefore", int32(before))
	dst = bsoncore.AppendInt32Element(dst, "numIndexesAfter", int32(len(coll.indexes)))
	return dst, nil
}

func cmdListIndexes(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	c.e.mu.RLock()
	coll := c.e.collection(c.db, name)
	var specs []bsoncore.Document
	if coll != nil {
		specs = append(specs, coll.indexes...)
	}
	c.e.mu.RUnlock()
	if coll == nil {
		return nil, errf(codeNamespaceNotFound, "ns does not exist: %s.%s", c.db, name)
	}
	return openCursor(c, dst, c.db+"."+name, &listCursor{docs: specs}, 0, false)
}

func cmdDropIndexes(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	c.e.lock()
	defer c.e.unlock()
	coll := c.e.collection(c.db, name)
	if coll == nil {
		return nil, errf(codeNamespaceNotFound, "ns not found %s.%s", c.db, name)
	}
	dst = bsoncore.AppendInt32Element(dst, "nIndexesWas", int32(len(coll.indexes)))
	which := c.value("index")
	if s, ok := which.StringValueOK(); ok && s != "*" {
		if s == "_id_" {
			return nil, errf(codeInvalidOptions, "cannot drop _id index")
		}
		for i, spec := range coll.indexes {
			if spec.Lookup("name").StringValue() == s {
				coll.indexes = append(coll.indexes[:i:i], coll.indexes[i+1:]...)
				for j, ix := range coll.uniques {
					if ix.name == s {
						coll.uniques = append(coll.uniques[:j:j], coll.uniques[j+1:]...)
						break
					}
				}
				return dst, nil
			}
		}
		return nil, errf(27, "index not found with name [%s]", s)
	}
	coll.indexes = coll.indexes[:1]
	coll.uniques = nil
	return dst, nil
}

// cmdCollStats gives counts and sizes for collStats and dbStats.
func cmdCollStats(c *cmdCtx, dst []byte) ([]byte, error) {
	c.e.mu.RLock()
	defer c.e.mu.RUnlock()
	var count, size int64
	if c.name == "collStats" {
		name, err := c.collName()
		if err != nil {
			return nil, err
		}
		coll := c.e.collection(c.db, name)
		if coll == nil {
			return nil, errf(codeNamespaceNotFound, "ns not found")
		}
		count, size = int64(coll.docs.Len()), coll.size
		dst = bsoncore.AppendStringElement(dst, "ns", coll.ns.String())
	} else if d := c.e.dbs[c.db]; d != nil {
		for _, coll := range d.colls {
			count += int64(coll.docs.Len())
			size += coll.size
		}
		dst = bsoncore.AppendStringElement(dst, "db", c.db)
		dst = bsoncore.AppendInt64Element(dst, "collections", int64(len(d.colls)))
	}
	dst = bsoncore.AppendInt64Element(dst, "count", count)
	dst = bsoncore.AppendInt64Element(dst, "objects", count)
	dst = bsoncore.AppendInt64Element(dst, "size", size)
	return dst, nil
}
