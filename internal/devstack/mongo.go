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
	start := func(name string, documentDB bool, oplogMax int) (*mongoserver.Server, error) {
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
			return nil, fmt.Errorf("devstack: %s mongo server: %w", name, err)
		}
		st.onClose(srv.Close)
		return srv, nil
	}
	primary, err := start("primary", !opts.PrimaryIsMongoDB, opts.OplogMaxEntries)
	if err != nil {
		return err
	}
	st.primary, st.PrimaryURI = primary, primary.URI()
	dr, err := start("dr", false, opts.DROplogMaxEntries)
	if err != nil {
		return err
	}
	st.DRURI = dr.URI()
	return nil
}

// StopPrimary shuts the primary's server down, as a lost region would: its listener closes and
// every connection drops; nothing answers at PrimaryURI afterwards (Close does not stop it
// twice). Failover tests use it.
func (st *Stack) StopPrimary() error {
	if st.primary == nil {
		return nil
	}
	err := st.primary.Close()
	st.primary = nil
	return err
}
