package mongoserver

import (
	"time"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Handshake, diagnostics and session commands.

func init() {
	register(cmdHello, true, "hello", "isMaster", "ismaster")
	register(cmdPing, true, "ping")
	register(cmdBuildInfo, true, "buildInfo", "buildinfo")
	register(cmdEndSessions, false, "endSessions", "killSessions", "refreshSessions")
	register(cmdGetParameter, false, "getParameter")
	register(cmdServerStatus, false, "serverStatus")
	register(cmdGetCmdLineOpts, false, "getCmdLineOpts")
	register(cmdHostInfo, false, "hostInfo")
	register(cmdWhatsMyURI, true, "whatsmyuri")
	register(cmdConnectionStatus, true, "connectionStatus")
}

// cmdHello answers the handshake and monitoring hello: a writable primary of
// a one-member replica set. A monitoring hello that carries our
// topologyVersion and maxAwaitTimeMS is "awaitable": it is held until the
// timeout (the topology never changes), as MongoDB 4.4+ does.
func cmdHello(c *cmdCtx, dst []byte) ([]byte, error) {
	o := c.s.opts
	tv, _ := c.doc("topologyVersion")
	if pid, ok := tv.Lookup("processId").ObjectIDOK(); ok && pid == c.e.processID && c.has("maxAwaitTimeMS") {
		wait, err := c.integer("maxAwaitTimeMS", 0)
		if err != nil {
			return nil, err
		}
		t := time.NewTimer(time.Duration(wait) * time.Millisecond)
		select {
		case <-t.C:
		case <-c.conn.gone:
		case <-c.s.done:
		}
		t.Stop()
	}
	addr := c.s.Addr()
	isHello := c.name == "hello"
	if isHello || c.boolean("helloOk", false) {
		dst = bsoncore.AppendBooleanElement(dst, "helloOk", true)
	}
	if isHello {
		dst = bsoncore.AppendBooleanElement(dst, "isWritablePrimary", true)
	} else {
		dst = bsoncore.AppendBooleanElement(dst, "ismaster", true)
	}
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "topologyVersion")
	dst = bsoncore.AppendObjectIDElement(dst, "processId", c.e.processID)
	dst = bsoncore.AppendInt64Element(dst, "counter", 0)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	dst = bsoncore.AppendStringElement(dst, "setName", o.ReplicaSetName)
	dst = bsoncore.AppendInt32Element(dst, "setVersion", 1)
	aidx, dst := bsoncore.AppendArrayElementStart(dst, "hosts")
	dst = bsoncore.AppendStringElement(dst, "0", addr)
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	dst = bsoncore.AppendStringElement(dst, "primary", addr)
	dst = bsoncore.AppendStringElement(dst, "me", addr)
	dst = bsoncore.AppendBooleanElement(dst, "secondary", false)
	dst = bsoncore.AppendInt32Element(dst, "maxBsonObjectSize", maxBSONObjectSize)
	dst = bsoncore.AppendInt32Element(dst, "maxMessageSizeBytes", maxMessageSize)
	dst = bsoncore.AppendInt32Element(dst, "maxWriteBatchSize", maxWriteBatchSize)
	dst = bsoncore.AppendDateTimeElement(dst, "localTime", time.Now().UnixMilli())
	dst = bsoncore.AppendInt32Element(dst, "logicalSessionTimeoutMinutes", 30)
	dst = bsoncore.AppendInt32Element(dst, "connectionId", 1)
	dst = bsoncore.AppendInt32Element(dst, "minWireVersion", 0)
	dst = bsoncore.AppendInt32Element(dst, "maxWireVersion", int32(o.WireVersion))
	dst = bsoncore.AppendBooleanElement(dst, "readOnly", false)
	if user, _ := c.str("saslSupportedMechs"); user != "" && o.Username != "" {
		midx, out := bsoncore.AppendArrayElementStart(dst, "saslSupportedMechs")
		out = bsoncore.AppendStringElement(out, "0", "SCRAM-SHA-256")
		dst, _ = bsoncore.AppendArrayEnd(out, midx)
	}
	return dst, nil
}

func cmdPing(_ *cmdCtx, dst []byte) ([]byte, error) { return dst, nil }

// serverVersion maps the advertised wire version to a server version string.
func serverVersion(wire int) (string, []int32) {
	switch {
	case wire >= 13:
		return "5.0.0", []int32{5, 0, 0, 0}
	case wire >= 9:
		return "4.4.0", []int32{4, 4, 0, 0}
	case wire >= 8:
		return "4.2.0", []int32{4, 2, 0, 0}
	default:
		return "4.0.0", []int32{4, 0, 0, 0}
	}
}

func cmdBuildInfo(c *cmdCtx, dst []byte) ([]byte, error) {
	v, parts := serverVersion(c.s.opts.WireVersion)
	dst = bsoncore.AppendStringElement(dst, "version", v)
	idx, dst := bsoncore.AppendArrayElementStart(dst, "versionArray")
	for i, p := range parts {
		dst = bsoncore.AppendInt32Element(dst, itoa(i), p)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	dst = bsoncore.AppendStringElement(dst, "gitVersion", "docdb-dr-devstack")
	dst = bsoncore.AppendInt32Element(dst, "bits", 64)
	dst = bsoncore.AppendInt32Element(dst, "maxBsonObjectSize", maxBSONObjectSize)
	return dst, nil
}

func cmdEndSessions(_ *cmdCtx, dst []byte) ([]byte, error) { return dst, nil }

// cmdGetParameter answers the parameters tools commonly probe; others are
// reported absent, as MongoDB does for unknown names with getParameter: "*".
func cmdGetParameter(c *cmdCtx, dst []byte) ([]byte, error) {
	if c.has("featureCompatibilityVersion") || c.value("getParameter").Type == 0x02 {
		v, _ := serverVersion(c.s.opts.WireVersion)
		idx, out := bsoncore.AppendDocumentElementStart(dst, "featureCompatibilityVersion")
		out = bsoncore.AppendStringElement(out, "version", v[:3])
		dst, _ = bsoncore.AppendDocumentEnd(out, idx)
	}
	return dst, nil
}

func cmdServerStatus(c *cmdCtx, dst []byte) ([]byte, error) {
	v, _ := serverVersion(c.s.opts.WireVersion)
	dst = bsoncore.AppendStringElement(dst, "host", c.s.Addr())
	dst = bsoncore.AppendStringElement(dst, "version", v)
	dst = bsoncore.AppendStringElement(dst, "process", "mongod")
	dst = bsoncore.AppendDateTimeElement(dst, "localTime", time.Now().UnixMilli())
	c.e.mu.RLock()
	first, last := uint64(0), c.e.oplog.lastSeq
	if c.e.oplog.count > 0 {
		first = c.e.oplog.firstSeq
	}
	c.e.mu.RUnlock()
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "oplog")
	dst = bsoncore.AppendInt64Element(dst, "firstSeq", int64(first))
	dst = bsoncore.AppendInt64Element(dst, "lastSeq", int64(last))
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst, nil
}

func cmdGetCmdLineOpts(_ *cmdCtx, dst []byte) ([]byte, error) {
	idx, dst := bsoncore.AppendArrayElementStart(dst, "argv")
	dst = bsoncore.AppendStringElement(dst, "0", "mongod")
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	pidx, dst := bsoncore.AppendDocumentElementStart(dst, "parsed")
	dst, _ = bsoncore.AppendDocumentEnd(dst, pidx)
	return dst, nil
}

func cmdHostInfo(c *cmdCtx, dst []byte) ([]byte, error) {
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "system")
	dst = bsoncore.AppendStringElement(dst, "hostname", c.s.Addr())
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst, nil
}

func cmdWhatsMyURI(c *cmdCtx, dst []byte) ([]byte, error) {
	return bsoncore.AppendStringElement(dst, "you", c.conn.conn.RemoteAddr().String()), nil
}

func cmdConnectionStatus(c *cmdCtx, dst []byte) ([]byte, error) {
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "authInfo")
	uidx, dst := bsoncore.AppendArrayElementStart(dst, "authenticatedUsers")
	if c.conn.authenticated && c.s.opts.Username != "" {
		didx, out := bsoncore.AppendDocumentElementStart(dst, "0")
		out = bsoncore.AppendStringElement(out, "user", c.s.opts.Username)
		out = bsoncore.AppendStringElement(out, "db", "admin")
		dst, _ = bsoncore.AppendDocumentEnd(out, didx)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, uidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst, nil
}
