// Package brokertest is the one way tests start pgtandem's Pulsar-protocol
// broker: in-process, on random loopback ports, with its data in the test's
// temporary directory, stopped when the test ends.
//
//	b := brokertest.Start(t)
//	client, _ := pulsar.NewClient(pulsar.ClientOptions{URL: b.URL()})
//
// Restart stops the broker and starts it again on the same data directory
// and ports, so that tests can check that clients reconnect by themselves
// and that nothing acknowledged was lost.
package brokertest
