package catalog

import (
	"fmt"
	"regexp"
	"strconv"
)

// clusterNamePattern is what a cluster's name in the configuration must
// match: the names below embed it in identifiers that PostgreSQL and Pulsar
// both accept unquoted.
var clusterNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ClusterNameError reports a cluster name that cannot be embedded in a slot,
// origin or subscription name.
type ClusterNameError struct {
	Name string
}

func (e *ClusterNameError) Error() string {
	return fmt.Sprintf("cluster name %q must match %s (lower-case letter, then lower-case letters, digits, _)", e.Name, clusterNamePattern)
}

// ValidateClusterName returns a *ClusterNameError when name is not a valid
// cluster name.
func ValidateClusterName(name string) error {
	if !clusterNamePattern.MatchString(name) {
		return &ClusterNameError{Name: name}
	}
	return nil
}

// Schema is where pgtandem keeps its own tables on every cluster.
const Schema = "pgtandem"

// PublicationName is the publication every pgtandem slot decodes.
const PublicationName = "pgtandem"

// OriginPrefix starts the name of every replication origin broker2pg uses;
// capture drops transactions that carry such an origin, so an applied change
// never travels back.
const OriginPrefix = "pgtandem_"

// SlotName is the logical replication slot of a source cluster:
// pgtandem_<cluster>.
func SlotName(cluster string) string { return "pgtandem_" + cluster }

// OriginName is the replication origin of the apply session that applies
// source's changes: pgtandem_<source>.
func OriginName(source string) string { return OriginPrefix + source }

// ProducerName is the name of a cluster's producer: one per topic, so the
// broker refuses a second active capture and deduplicates resends.
func ProducerName(cluster string) string { return "pgtandem-" + cluster }

// SubscriptionName is the durable subscription through which target applies
// a source's topic: pgtandem-<target>. Every replica applying into the same
// target shares it, one active at a time.
func SubscriptionName(target string) string { return "pgtandem-" + target }

// Topic is the topic of a cluster whose server runs major, when the
// configuration names no topic of its own: <prefix>-pg<major>.
func Topic(prefix string, major int) string { return prefix + "-pg" + strconv.Itoa(major) }
