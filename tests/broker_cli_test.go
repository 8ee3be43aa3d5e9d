package tests

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"

	"github.com/pgtandem/pgtandem/internal/testwait"
)

// TestBrokerServe runs `pgtandem broker serve` as users do: pulsar-client-go
// produces and consumes through it, the admin API lists the topic, SIGTERM
// exits 0, and a restart on the same data dir still has the message.
func TestBrokerServe(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "broker")
	listen, admin := freeAddr(t), freeAddr(t)
	start := func() *exec.Cmd {
		cmd := exec.Command(pgtandemBin, "broker", "serve", "--listen", listen, "--admin-listen", admin, "--data-dir", dataDir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitListening(t, listen)
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("broker serve after SIGTERM: %v", err)
		}
	}
	topic := "persistent://public/default/cli"
	cmd := start()
	client, err := pulsar.NewClient(pulsar.ClientOptions{URL: "pulsar://" + listen})
	if err != nil {
		t.Fatal(err)
	}
	producer, err := client.CreateProducer(pulsar.ProducerOptions{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := producer.Send(context.Background(), &pulsar.ProducerMessage{Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	producer.Close()
	client.Close()

	resp, err := http.Get("http://" + admin + "/admin/v2/persistent/public/default")
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(body, &topics); err != nil || len(topics) != 1 || topics[0] != topic {
		t.Fatalf("admin topic list: %s (%v)", body, err)
	}
	stop(cmd)

	cmd = start()
	client, err = pulsar.NewClient(pulsar.ClientOptions{URL: "pulsar://" + listen})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: pulsar.EarliestMessageID()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg, err := reader.Next(ctx)
	if err != nil || string(msg.Payload()) != "kept" {
		t.Fatalf("after restart: %v %q", err, msg.Payload())
	}
	stop(cmd)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	testwait.For(t, 30*time.Second, "broker listening on "+addr, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
