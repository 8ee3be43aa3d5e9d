package broker2pg

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/rest"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pgtandem/pgtandem/internal/pulsarclient"
)

// ErrAdminUnauthorized reports that the broker's admin API refused a
// request for want of valid credentials (HTTP 401 or 403).
var ErrAdminUnauthorized = errors.New("the broker's admin API refused the request: the Pulsar token (pulsar.auth-token-file or pulsar.auth-token) is missing, wrong, or may not read topic stats")

// BacklogReader reads from the broker's admin API (Apache Pulsar's, or the
// one of `pgtandem broker serve`) how many messages of a topic a
// subscription has not acknowledged yet.
type BacklogReader struct {
	adminURL string
	admin    pulsaradmin.Client
}

// NewBacklogReader returns a reader of the admin API at adminURL that
// authenticates with token, the one the services give the broker (empty for
// a broker without authentication), and checks an https:// URL's
// certificate as the services check the broker's.
func NewBacklogReader(adminURL, token string, tlsOpts pulsarclient.TLS) (*BacklogReader, error) {
	admin, err := pulsarclient.NewAdmin(adminURL, token, tlsOpts)
	if err != nil {
		return nil, err
	}
	return &BacklogReader{adminURL: adminURL, admin: admin}, nil
}

// Backlog returns the number of messages of topic that subscription has not
// acknowledged. An admin API that refuses the token gives an error wrapping
// ErrAdminUnauthorized.
func (r *BacklogReader) Backlog(ctx context.Context, topic, subscription string) (int64, error) {
	name, err := utils.GetTopicName(topic)
	if err != nil {
		return 0, fmt.Errorf("backlog of %s: %w", topic, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stats, err := r.admin.Topics().GetStatsWithContext(ctx, *name)
	if err != nil {
		var re rest.Error
		if errors.As(err, &re) && (re.Code == http.StatusUnauthorized || re.Code == http.StatusForbidden) {
			err = fmt.Errorf("%w (HTTP %d: %s)", ErrAdminUnauthorized, re.Code, re.Reason)
		}
		return 0, fmt.Errorf("topic stats of %s from %s: %w", topic, r.adminURL, err)
	}
	sub, ok := stats.Subscriptions[subscription]
	if !ok {
		return 0, fmt.Errorf("topic %s has no subscription %s", topic, subscription)
	}
	return sub.MsgBacklog, nil
}
