package devstack

import (
	"fmt"
	"path/filepath"

	"github.com/docdb-dr/docdb-dr/internal/devstack/certs"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// startMongo starts the primary and the DR server on loopback. The primary
// is DocumentDB-like unless PrimaryIsMongoDB; the DR server is a plain
// replica set, as apply only writes to it. With a DataDir each server keeps
// its snapshot in DataDir/primary or DataDir/dr (written when the stack
// closes, loaded when it starts).
func (st *Stack) startMongo(opts Options, bundle *certs.Bundle) error {
	start := func(name string, documentDB bool, oplogMax int) (string, error) {
		o := mongoserver.Options{
			WireVersion:     opts.WireVersion,
			DocumentDB:      documentDB,
			OplogMaxEntries: oplogMax,
			Username:        opts.Username,
			Password:        opts.Password,
			Logger:          opts.Logger.With("component", "mongoserver", "cluster", name),
		}
		if opts.DataDir != "" {
			o.DataDir = filepath.Join(opts.DataDir, name)
		}
		if bundle != nil {
			o.TLSConfig = bundle.ServerTLS
		}
		srv := mongoserver.New(o)
		if err := srv.Start("127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("devstack: %s mongo server: %w", name, err)
		}
		st.onClose(srv.Close)
		return srv.URI(), nil
	}
	var err error
	if st.PrimaryURI, err = start("primary", !opts.PrimaryIsMongoDB, opts.OplogMaxEntries); err != nil {
		return err
	}
	st.DRURI, err = start("dr", false, 0)
	return err
}
