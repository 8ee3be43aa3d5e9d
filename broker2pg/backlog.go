package broker2pg

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// TopicBacklog asks the broker's admin API (Apache Pulsar's, or the one of
// `pgtandem broker serve`) how many messages of topic the subscription has
// not acknowledged yet.
func TopicBacklog(ctx context.Context, adminURL, topic, subscription string) (int64, error) {
	rest, ok := strings.CutPrefix(topic, "persistent://")
	if !ok {
		return 0, fmt.Errorf("topic %s is not persistent://tenant/namespace/name", topic)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(adminURL, "/")+"/admin/v2/persistent/"+rest+"/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("topic stats of %s: %w", topic, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("topic stats of %s: %s", topic, resp.Status)
	}
	var stats struct {
		Subscriptions map[string]struct {
			MsgBacklog int64 `json:"msgBacklog"`
		} `json:"subscriptions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		return 0, fmt.Errorf("topic stats of %s: %w", topic, err)
	}
	sub, ok := stats.Subscriptions[subscription]
	if !ok {
		return 0, fmt.Errorf("topic %s has no subscription %s", topic, subscription)
	}
	return sub.MsgBacklog, nil
}
