package apply

import (
	"errors"
	"fmt"

	"github.com/docdb-dr/docdb-dr/pkg/config"
)

// OptionsFromConfig maps the apply configuration (the environment the function reads) to
// Options, parsing INTERCEPT_POLICY and NAMESPACE_MAP; every problem is reported at once, named
// by its variable. The Lambda function and the local pipeline both use it. Logger and Metrics
// are left for the caller.
func OptionsFromConfig(c config.Apply) (Options, error) {
	policy, perr := ParsePolicy(c.InterceptPolicy)
	if perr != nil {
		perr = fmt.Errorf("INTERCEPT_POLICY: %w", perr)
	}
	nsmap, merr := ParseNamespaceMap(c.NamespaceMap)
	if merr != nil {
		merr = fmt.Errorf("NAMESPACE_MAP: %w", merr)
	}
	if err := errors.Join(perr, merr); err != nil {
		return Options{}, err
	}
	return Options{
		Policy:           &policy,
		NamespaceMap:     nsmap,
		MaxBulkOps:       c.MaxBulkOps,
		ArchivePrefix:    c.Archive.Prefix,
		ClaimCheckBucket: c.Archive.Bucket,
	}, nil
}
