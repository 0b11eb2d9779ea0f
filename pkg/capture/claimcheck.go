package capture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// ClaimCheckKey is where an oversized event's full message is stored:
//
//	<prefix>claimcheck/db=<db>/coll=<coll>/<clusterTime.T>-<clusterTime.I>-<sha256>.bson
//
// The key is a function of the event and its content, so republishing the same event after a
// crash overwrites the same object. coll is "_" for dropDatabase.
func ClaimCheckKey(prefix string, ev *changeevent.Event, sha256Hex string) string {
	coll := ev.NS.Coll
	if coll == "" {
		coll = "_"
	}
	return fmt.Sprintf("%sclaimcheck/db=%s/coll=%s/%d-%d-%s.bson",
		prefix, url.PathEscape(ev.NS.DB), url.PathEscape(coll), ev.ClusterTime.T, ev.ClusterTime.I, sha256Hex)
}

// claimCheck stores the full message in the blob store and returns the reduced event that
// points at it: only the routing fields (operation, namespace, document key, cluster time,
// resume token) and the claim check.
func claimCheck(ctx context.Context, blobs Blob, prefix string, ev *changeevent.Event, full []byte) (*changeevent.Event, error) {
	sum := sha256.Sum256(full)
	digest := hex.EncodeToString(sum[:])
	key := ClaimCheckKey(prefix, ev, digest)
	if err := blobs.Put(ctx, key, full); err != nil {
		return nil, fmt.Errorf("claim check %s event of %s (%d bytes) to s3://%s/%s: %w",
			ev.Operation, ev.NS, len(full), blobs.Bucket(), key, err)
	}
	return &changeevent.Event{
		Version:     ev.Version,
		Operation:   ev.Operation,
		NS:          ev.NS,
		DocumentKey: ev.DocumentKey,
		ClusterTime: ev.ClusterTime,
		ResumeToken: ev.ResumeToken,
		ClaimCheck: &changeevent.ClaimCheck{
			Bucket: blobs.Bucket(),
			Key:    key,
			Size:   int64(len(full)),
			SHA256: digest,
		},
	}, nil
}
