package devbroker

import (
	"fmt"
	"regexp"
	"strings"
)

// TopicName is a fully qualified persistent topic name.
type TopicName struct {
	Tenant    string
	Namespace string
	Local     string
}

const persistentScheme = "persistent://"

var (
	namePart        = regexp.MustCompile(`^[A-Za-z0-9_.=:-]+$`)
	partitionSuffix = regexp.MustCompile(`-partition-[0-9]+$`)
)

// TopicNameError reports a topic name the broker cannot serve.
type TopicNameError struct {
	Name   string
	Reason string
}

func (e *TopicNameError) Error() string {
	return fmt.Sprintf("topic %q: %s", e.Name, e.Reason)
}

// ParseTopicName normalizes a topic name as Pulsar does: "t" becomes
// persistent://public/default/t and "tenant/ns/t" becomes
// persistent://tenant/ns/t. Non-persistent and partitioned topics are
// refused.
func ParseTopicName(s string) (TopicName, error) {
	rest := s
	switch {
	case strings.HasPrefix(s, persistentScheme):
		rest = strings.TrimPrefix(s, persistentScheme)
	case strings.HasPrefix(s, "non-persistent://"):
		return TopicName{}, &TopicNameError{Name: s, Reason: "non-persistent topics are not supported by the pgtandem broker"}
	case strings.Contains(s, "://"):
		return TopicName{}, &TopicNameError{Name: s, Reason: "unknown topic domain"}
	case !strings.Contains(s, "/"):
		rest = "public/default/" + s
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 {
		return TopicName{}, &TopicNameError{Name: s, Reason: "want persistent://tenant/namespace/topic"}
	}
	t := TopicName{Tenant: parts[0], Namespace: parts[1], Local: parts[2]}
	if err := t.validate(); err != nil {
		return TopicName{}, &TopicNameError{Name: s, Reason: err.Error()}
	}
	return t, nil
}

func (t TopicName) validate() error {
	// Tenant, namespace and escaped local name become directory names, so
	// "." and ".." must never get through.
	switch {
	case !namePart.MatchString(t.Tenant) || t.Tenant == "." || t.Tenant == "..":
		return fmt.Errorf("invalid tenant %q", t.Tenant)
	case !namePart.MatchString(t.Namespace) || t.Namespace == "." || t.Namespace == "..":
		return fmt.Errorf("invalid namespace %q", t.Namespace)
	case t.Local == "" || t.Local == "." || t.Local == ".." || strings.ContainsAny(t.Local, "/\x00"):
		return fmt.Errorf("invalid local name %q (the old tenant/cluster/namespace form is not supported)", t.Local)
	case partitionSuffix.MatchString(t.Local):
		return fmt.Errorf("partitioned topics are not supported by the pgtandem broker; use a non-partitioned topic")
	}
	return nil
}

// String returns the fully qualified name.
func (t TopicName) String() string {
	return persistentScheme + t.Tenant + "/" + t.Namespace + "/" + t.Local
}

// NamespaceName returns "tenant/namespace".
func (t TopicName) NamespaceName() string { return t.Tenant + "/" + t.Namespace }
