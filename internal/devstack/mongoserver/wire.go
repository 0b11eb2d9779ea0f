package mongoserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// Wire-level limits, the same numbers hello advertises.
const (
	maxBSONObjectSize  = 16 * 1024 * 1024
	maxMessageSize     = 48_000_000
	maxWriteBatchSize  = 100_000
	headerLen          = 16
	bsonOverheadMargin = 16 * 1024 // room for the command around a maximal document
)

// errMalformed marks a message that cannot be parsed; the connection that sent
// it is closed, as MongoDB does.
var errMalformed = errors.New("malformed wire message")

// request is one parsed client message: a command document plus the OP_MSG
// document sequences that belong to it (insert "documents", update "updates",
// delete "deletes").
type request struct {
	requestID  int32
	legacy     bool // OP_QUERY: answer with OP_REPLY
	moreToCome bool // OP_MSG moreToCome: the client expects no reply
	exhaust    bool // OP_MSG exhaustAllowed
	body       bsoncore.Document
	seqs       map[string][]bsoncore.Document
}

// readMessage reads one length-prefixed message from r. It enforces the size
// limits before allocating, so a hostile length cannot exhaust memory.
func readMessage(r io.Reader) ([]byte, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	n := int32(binary.LittleEndian.Uint32(lenBuf[:]))
	if n < headerLen || n > maxMessageSize {
		return nil, fmt.Errorf("%w: message length %d", errMalformed, n)
	}
	msg := make([]byte, n)
	copy(msg, lenBuf[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// parseMessage decodes an OP_MSG or a legacy OP_QUERY command. Anything else,
// or anything inconsistent, is errMalformed. It never panics on bad input.
func parseMessage(msg []byte) (req *request, err error) {
	defer func() {
		if r := recover(); r != nil {
			req, err = nil, fmt.Errorf("%w: %v", errMalformed, r)
		}
	}()
	length, reqID, _, opcode, rem, ok := wiremessage.ReadHeader(msg)
	if !ok || int(length) != len(msg) {
		return nil, fmt.Errorf("%w: bad header", errMalformed)
	}
	switch opcode {
	case wiremessage.OpMsg:
		return parseOpMsg(reqID, msg, rem)
	case opQuery:
		return parseOpQuery(reqID, rem)
	default:
		return nil, fmt.Errorf("%w: unsupported opcode %d", errMalformed, opcode)
	}
}

// parseOpMsg decodes the flag bits, sections and optional CRC-32C checksum.
func parseOpMsg(reqID int32, msg, rem []byte) (*request, error) {
	flags, rem, ok := wiremessage.ReadMsgFlags(rem)
	if !ok {
		return nil, fmt.Errorf("%w: OP_MSG flags", errMalformed)
	}
	// Bits 0-15 are "required": a client setting one we do not know is an error.
	const known = wiremessage.ChecksumPresent | wiremessage.MoreToCome | wiremessage.ExhaustAllowed
	if flags&0xffff&^known != 0 {
		return nil, fmt.Errorf("%w: unknown required OP_MSG flag bits %#x", errMalformed, uint32(flags))
	}
	if flags&wiremessage.ChecksumPresent != 0 {
		if len(rem) < 4 {
			return nil, fmt.Errorf("%w: missing checksum", errMalformed)
		}
		want := binary.LittleEndian.Uint32(rem[len(rem)-4:])
		if crc32.Checksum(msg[:len(msg)-4], crc32.MakeTable(crc32.Castagnoli)) != want {
			return nil, fmt.Errorf("%w: checksum mismatch", errMalformed)
		}
		rem = rem[:len(rem)-4]
	}
	req := &request{
		requestID:  reqID,
		moreToCome: flags&wiremessage.MoreToCome != 0,
		exhaust:    flags&wiremessage.ExhaustAllowed != 0,
	}
	for len(rem) > 0 {
		var kind wiremessage.SectionType
		kind, rem, ok = wiremessage.ReadMsgSectionType(rem)
		if !ok {
			return nil, fmt.Errorf("%w: section kind", errMalformed)
		}
		switch kind {
		case wiremessage.SingleDocument:
			if req.body != nil {
				return nil, fmt.Errorf("%w: two body sections", errMalformed)
			}
			var doc bsoncore.Document
			doc, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem)
			if !ok {
				return nil, fmt.Errorf("%w: truncated body section", errMalformed)
			}
			if err := doc.Validate(); err != nil {
				return nil, fmt.Errorf("%w: body: %v", errMalformed, err)
			}
			req.body = doc
		case wiremessage.DocumentSequence:
			var id string
			var docs []bsoncore.Document
			id, docs, rem, ok = wiremessage.ReadMsgSectionDocumentSequence(rem)
			if !ok {
				return nil, fmt.Errorf("%w: truncated document sequence", errMalformed)
			}
			for i, d := range docs {
				if err := d.Validate(); err != nil {
					return nil, fmt.Errorf("%w: sequence %q item %d: %v", errMalformed, id, i, err)
				}
			}
			if req.seqs == nil {
				req.seqs = map[string][]bsoncore.Document{}
			}
			req.seqs[id] = append(req.seqs[id], docs...)
		default:
			return nil, fmt.Errorf("%w: unknown section kind %d", errMalformed, kind)
		}
	}
	if req.body == nil {
		return nil, fmt.Errorf("%w: OP_MSG without a body section", errMalformed)
	}
	return req, nil
}

// opQuery is the legacy OP_QUERY opcode (2004 in the wire protocol's "Legacy
// Opcodes"). The driver marks its own constant and OP_QUERY readers deprecated
// for clients, which should send OP_MSG; a server must still accept OP_QUERY,
// because every driver (the Go driver 1.17 included) sends its first hello on a
// new connection as an OP_QUERY on "admin.$cmd" until it knows the server's wire
// version. So the layout is read here, from the spec, rather than through the
// deprecated readers.
const opQuery wiremessage.OpCode = 2004

// parseOpQuery decodes the legacy handshake: a query on "<db>.$cmd" whose
// document is the command, possibly wrapped as {$query: cmd, ...}. The body
// after the header is
//
//	int32 flags | cstring fullCollectionName | int32 numberToSkip |
//	int32 numberToReturn | document query | [document returnFieldsSelector]
func parseOpQuery(reqID int32, rem []byte) (*request, error) {
	if len(rem) < 4 {
		return nil, fmt.Errorf("%w: OP_QUERY flags", errMalformed)
	}
	rem = rem[4:] // flags: none changes how a command is answered
	nul := bytes.IndexByte(rem, 0)
	if nul < 0 {
		return nil, fmt.Errorf("%w: OP_QUERY namespace", errMalformed)
	}
	ns := string(rem[:nul])
	rem = rem[nul+1:]
	if len(rem) < 8 {
		return nil, fmt.Errorf("%w: OP_QUERY numberToSkip/numberToReturn", errMalformed)
	}
	rem = rem[8:] // numberToSkip, numberToReturn: a command answers one document
	query, _, ok := bsoncore.ReadDocument(rem)
	if !ok {
		return nil, fmt.Errorf("%w: OP_QUERY document", errMalformed)
	}
	if err := query.Validate(); err != nil {
		return nil, fmt.Errorf("%w: OP_QUERY document: %v", errMalformed, err)
	}
	if v, err := query.LookupErr("$query"); err == nil {
		inner, ok := v.DocumentOK()
		if !ok {
			return nil, fmt.Errorf("%w: $query is not a document", errMalformed)
		}
		query = inner
	}
	db, ok := cutSuffix(ns, ".$cmd")
	if !ok || db == "" {
		return nil, fmt.Errorf("%w: OP_QUERY on %q is not a command", errMalformed, ns)
	}
	// Legacy commands carry the database in the namespace; put it where
	// OP_MSG would so that dispatch reads one place.
	idx, body := bsoncore.AppendDocumentStart(make([]byte, 0, len(query)+len(db)+16))
	elems, _ := query.Elements()
	for _, e := range elems {
		if e.Key() != "$db" {
			body = append(body, e...)
		}
	}
	body = bsoncore.AppendStringElement(body, "$db", db)
	body, _ = bsoncore.AppendDocumentEnd(body, idx)
	return &request{requestID: reqID, legacy: true, body: body}, nil
}

// startOpMsgReply appends the header, flags and body-section kind of an
// OP_MSG answering responseTo; the body document follows, then the caller
// fixes the length at index.
func startOpMsgReply(dst []byte, responseTo int32) (index int32, out []byte) {
	index, dst = wiremessage.AppendHeaderStart(dst, wiremessage.NextRequestID(), responseTo, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	return index, wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
}

// startOpReply is startOpMsgReply for a legacy OP_REPLY with one document.
func startOpReply(dst []byte, responseTo int32) (index int32, out []byte) {
	index, dst = wiremessage.AppendHeaderStart(dst, wiremessage.NextRequestID(), responseTo, wiremessage.OpReply)
	dst = wiremessage.AppendReplyFlags(dst, wiremessage.AwaitCapable)
	dst = wiremessage.AppendReplyCursorID(dst, 0)
	dst = wiremessage.AppendReplyStartingFrom(dst, 0)
	return index, wiremessage.AppendReplyNumberReturned(dst, 1)
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}
