package mongoserver

import (
	"testing"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// TestOplogCaps appends across chunk boundaries under entry and byte caps
// and checks what is retained and what is reported trimmed.
func TestOplogCaps(t *testing.T) {
	doc := bsoncore.NewDocumentBuilder().AppendString("s", "0123456789").Build()
	for _, tc := range []struct {
		name              string
		maxEntries        int
		maxBytes          int64
		appends           int
		wantFirst, wantTr uint64
	}{
		{"under cap", 100, 0, 50, 1, 0},
		{"entry cap inside first chunk", 10, 0, 25, 16, 15},
		{"entry cap across chunks", oplogChunk + 3, 0, 3*oplogChunk + 7, 2*oplogChunk + 5, 2*oplogChunk + 4},
		{"byte cap", 1_000_000, 10 * (64 + int64(len(doc))), 100, 91, 90},
		{"byte cap below one entry keeps the newest", 1_000_000, 1, 5, 5, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(Options{OplogMaxEntries: tc.maxEntries, OplogMaxBytes: tc.maxBytes})
			ns := &namespace{db: "d", coll: "c"}
			for i := 0; i < tc.appends; i++ {
				e.appendEntry(oplogEntry{op: opInsert, ns: ns, doc: doc})
			}
			o := &e.oplog
			if o.firstSeq != tc.wantFirst || o.trimmedSeq != tc.wantTr {
				t.Fatalf("firstSeq %d trimmedSeq %d, want %d %d", o.firstSeq, o.trimmedSeq, tc.wantFirst, tc.wantTr)
			}
			if o.count != int(o.lastSeq-o.firstSeq+1) {
				t.Fatalf("count %d for positions %d..%d", o.count, o.firstSeq, o.lastSeq)
			}
			for seq := o.firstSeq; seq <= o.lastSeq; seq++ {
				if en := o.entryAt(seq); en == nil || en.seq != seq {
					t.Fatalf("entryAt(%d) = %v", seq, en)
				}
			}
			if o.entryAt(o.firstSeq-1) != nil || o.entryAt(o.lastSeq+1) != nil {
				t.Fatal("entryAt outside the retained range returned an entry")
			}
			mid := o.entryAt((o.firstSeq + o.lastSeq) / 2)
			if got := o.firstSeqAtOrAfter(mid.ts); got != mid.seq {
				t.Fatalf("firstSeqAtOrAfter(%v) = %d, want %d", mid.ts, got, mid.seq)
			}
		})
	}
}

// TestResumeTokenRoundTrip checks token encoding and its string ordering.
func TestResumeTokenRoundTrip(t *testing.T) {
	toks := []resumeToken{
		{seq: 1}, {seq: 2}, {seq: 2, invalidate: true}, {seq: 300},
	}
	for i := range toks {
		toks[i].ts.T, toks[i].ts.I = 1700000000, uint32(toks[i].seq)
	}
	for i, tok := range toks {
		got, err := parseResumeToken(tok.document())
		if err != nil || got != tok {
			t.Fatalf("round trip %+v: got %+v %v", tok, got, err)
		}
		if i > 0 && toks[i-1].data() >= tok.data() {
			t.Fatalf("token %d does not sort after token %d", i, i-1)
		}
	}
	for _, bad := range []string{"", "zz", "01", "02" + toks[0].data()[2:]} {
		doc := bsoncore.NewDocumentBuilder().AppendString("_data", bad).Build()
		if _, err := parseResumeToken(doc); err == nil {
			t.Fatalf("accepted bad token %q", bad)
		}
	}
}
