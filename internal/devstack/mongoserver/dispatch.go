package mongoserver

import (
	"runtime/debug"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// cmdCtx is what a command handler sees: the parsed request, its target
// database and the connection it came from.
type cmdCtx struct {
	s    *Server
	e    *engine
	conn *connState
	req  *request
	name string            // command name, the first key of the body
	db   string            // $db
	body bsoncore.Document // the command document
}

// handlerFunc appends the command's reply fields (everything but ok,
// operationTime and $clusterTime) to dst, an open BSON document.
type handlerFunc func(c *cmdCtx, dst []byte) ([]byte, error)

// command describes one command: its handler and whether it may run before
// authentication.
type command struct {
	run    handlerFunc
	noAuth bool
}

// commands is the dispatch table. It is filled in init functions next to
// the handlers so that each file registers what it implements.
var commands = map[string]command{}

func register(run handlerFunc, noAuth bool, names ...string) {
	for _, n := range names {
		commands[n] = command{run: run, noAuth: noAuth}
	}
}

// handle runs one command and appends the complete reply document to dst
// (a reusable buffer that may already hold the message header). It never
// panics: a handler panic becomes an InternalError reply.
func (s *Server) handle(cs *connState, req *request, dst []byte) []byte {
	start := len(dst)
	first, err := req.body.IndexErr(0)
	if err != nil {
		return appendErrorReply(dst, errf(codeFailedToParse, "empty command document"))
	}
	c := &cmdCtx{s: s, e: s.db, conn: cs, req: req, name: first.Key(), body: req.body}
	if v, err := req.body.LookupErr("$db"); err == nil {
		c.db, _ = v.StringValueOK()
	}
	if c.db == "" {
		return appendErrorReply(dst, errf(codeInvalidNamespace, "command %s has no $db", c.name))
	}
	if len(req.body) > maxBSONObjectSize+bsonOverheadMargin {
		return appendErrorReply(dst, tooLarge(len(req.body)))
	}
	cmd, ok := commands[c.name]
	if !ok {
		return appendErrorReply(dst, errf(codeCommandNotFound, "no such command: '%s'", c.name))
	}
	if !cmd.noAuth && !cs.authenticated {
		return appendErrorReply(dst, errf(codeUnauthorized, "command %s requires authentication", c.name))
	}

	idx, dst := bsoncore.AppendDocumentStart(dst)
	out, err := runHandler(cmd.run, c, dst)
	if err != nil {
		return appendErrorReply(dst[:start], asCmdError(err, codeInternalError))
	}
	out = bsoncore.AppendDoubleElement(out, "ok", 1)
	out = s.db.appendClusterTime(out)
	out, _ = bsoncore.AppendDocumentEnd(out, idx)
	return out
}

// runHandler calls run, turning a panic into an InternalError.
func runHandler(run handlerFunc, c *cmdCtx, dst []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.s.log.Error("mongoserver command panic", "command", c.name, "panic", r, "stack", string(debug.Stack()))
			out, err = nil, errf(codeInternalError, "%s: internal error: %v", c.name, r)
		}
	}()
	return run(c, dst)
}

// appendErrorReply appends {ok: 0, errmsg, code, codeName}.
func appendErrorReply(dst []byte, ce *cmdError) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendDoubleElement(dst, "ok", 0)
	dst = bsoncore.AppendStringElement(dst, "errmsg", ce.Msg)
	dst = bsoncore.AppendInt32Element(dst, "code", ce.Code)
	dst = bsoncore.AppendStringElement(dst, "codeName", ce.codeName())
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// appendClusterTime adds operationTime and $clusterTime (the latest oplog
// time), which drivers gossip and use to resume change streams.
func (e *engine) appendClusterTime(dst []byte) []byte {
	e.mu.RLock()
	ts := e.oplog.lastTS
	e.mu.RUnlock()
	if ts.T == 0 {
		return dst
	}
	dst = bsoncore.AppendTimestampElement(dst, "operationTime", ts.T, ts.I)
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "$clusterTime")
	dst = bsoncore.AppendTimestampElement(dst, "clusterTime", ts.T, ts.I)
	sidx, dst := bsoncore.AppendDocumentElementStart(dst, "signature")
	dst = bsoncore.AppendBinaryElement(dst, "hash", 0, make([]byte, 20))
	dst = bsoncore.AppendInt64Element(dst, "keyId", 0)
	dst, _ = bsoncore.AppendDocumentEnd(dst, sidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// --- argument helpers -------------------------------------------------------

// value returns the body field key, or a zero Value when absent.
func (c *cmdCtx) value(key string) bsoncore.Value {
	v, err := c.body.LookupErr(key)
	if err != nil {
		return bsoncore.Value{}
	}
	return v
}

// has reports whether the body has field key.
func (c *cmdCtx) has(key string) bool { return c.value(key).Type != 0 }

// str returns a string field ("" when absent) or a TypeMismatch error.
func (c *cmdCtx) str(key string) (string, error) {
	v := c.value(key)
	if v.Type == 0 {
		return "", nil
	}
	s, ok := v.StringValueOK()
	if !ok {
		return "", errf(codeTypeMismatch, "%s: field %s must be a string, not %s", c.name, key, v.Type)
	}
	return s, nil
}

// collName returns the collection named by the command's first field.
func (c *cmdCtx) collName() (string, error) {
	v := c.value(c.name)
	s, ok := v.StringValueOK()
	if !ok || s == "" {
		return "", errf(codeInvalidNamespace, "%s: collection name must be a non-empty string", c.name)
	}
	if strings.ContainsRune(s, 0) || strings.HasPrefix(s, "$") {
		return "", errf(codeInvalidNamespace, "invalid collection name %q", s)
	}
	return s, nil
}

// doc returns an embedded-document field, nil when absent or null.
func (c *cmdCtx) doc(key string) (bsoncore.Document, error) {
	return docValue(c.name, key, c.value(key))
}

func docValue(cmd, key string, v bsoncore.Value) (bsoncore.Document, error) {
	switch v.Type {
	case 0, bson.TypeNull:
		return nil, nil
	case bson.TypeEmbeddedDocument:
		return v.Document(), nil
	default:
		return nil, errf(codeTypeMismatch, "%s: field %s must be a document, not %s", cmd, key, v.Type)
	}
}

// boolean returns a field as a truth value (bool or number), def when absent.
func (c *cmdCtx) boolean(key string, def bool) bool {
	return truthy(c.value(key), def)
}

func truthy(v bsoncore.Value, def bool) bool {
	switch v.Type {
	case bson.TypeBoolean:
		return v.Boolean()
	case bson.TypeInt32, bson.TypeInt64, bson.TypeDouble:
		n, _ := v.AsInt64OK()
		if v.Type == bson.TypeDouble {
			return v.Double() != 0
		}
		return n != 0
	case bson.TypeNull, bson.TypeUndefined:
		return false
	case 0:
		return def
	default:
		return true
	}
}

// integer returns a numeric field as int64, def when absent.
func (c *cmdCtx) integer(key string, def int64) (int64, error) {
	return intValue(c.name, key, c.value(key), def)
}

func intValue(cmd, key string, v bsoncore.Value, def int64) (int64, error) {
	switch v.Type {
	case 0, bson.TypeNull:
		return def, nil
	case bson.TypeInt32:
		return int64(v.Int32()), nil
	case bson.TypeInt64:
		return v.Int64(), nil
	case bson.TypeDouble:
		return int64(v.Double()), nil
	case bson.TypeDecimal128:
		n, ok := v.AsInt64OK()
		if ok {
			return n, nil
		}
	}
	return 0, errf(codeTypeMismatch, "%s: field %s must be a number, not %s", cmd, key, v.Type)
}

// writeCommand reads what insert, update and delete share: the collection,
// the statements in the list named key (see docs), and ordered (default true).
func (c *cmdCtx) writeCommand(key string) (coll string, stmts []bsoncore.Document, ordered bool, err error) {
	if coll, err = c.collName(); err != nil {
		return "", nil, false, err
	}
	if stmts, err = c.docs(key); err != nil {
		return "", nil, false, err
	}
	return coll, stmts, c.boolean("ordered", true), nil
}

// docs returns the documents of a write command's list: from the OP_MSG
// document sequence named key, or else from the body's array field key.
func (c *cmdCtx) docs(key string) ([]bsoncore.Document, error) {
	if seq, ok := c.req.seqs[key]; ok {
		return seq, nil
	}
	v := c.value(key)
	if v.Type == 0 {
		return nil, nil
	}
	arr, ok := v.ArrayOK()
	if !ok {
		return nil, errf(codeTypeMismatch, "%s: field %s must be an array", c.name, key)
	}
	vals, err := arr.Values()
	if err != nil {
		return nil, errf(codeFailedToParse, "%s: %v", key, err)
	}
	out := make([]bsoncore.Document, 0, len(vals))
	for i, v := range vals {
		d, ok := v.DocumentOK()
		if !ok {
			return nil, errf(codeTypeMismatch, "%s.%d must be a document", key, i)
		}
		out = append(out, d)
	}
	return out, nil
}

// appendTimestamp is a shorthand for a Timestamp element.
func appendTimestamp(dst []byte, key string, ts primitive.Timestamp) []byte {
	return bsoncore.AppendTimestampElement(dst, key, ts.T, ts.I)
}
