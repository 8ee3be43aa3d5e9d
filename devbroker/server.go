package devbroker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultRetentionInterval is how often retention limits are enforced when
// Config.RetentionInterval is 0.
const defaultRetentionInterval = time.Minute

// Server is a running broker. Create it with [New], start serving with
// [Server.Start], stop it with [Server.Close]; [Run] does all three.
type Server struct {
	cfg    Config
	log    *slog.Logger
	token  string
	topics *topicRegistry

	dirLock *os.File
	// instance makes generated producer names unique across restarts, so
	// that deduplication never mistakes a new producer for an old one.
	instance      string
	producerNames atomic.Uint64

	ln       net.Listener
	tls      *tls.Config // nil: plain TCP
	adminLn  net.Listener
	adminSrv *http.Server

	quit chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
}

// New validates cfg, locks the data directory and opens every topic found
// in it. Nothing listens until [Server.Start].
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, quit: make(chan struct{}), conns: map[*conn]struct{}{}}
	var err error
	if cfg.AuthTokenFile != "" {
		b, err := os.ReadFile(cfg.AuthTokenFile)
		if err != nil {
			return nil, &ConfigError{Field: "AuthTokenFile", Reason: err.Error()}
		}
		if s.token = strings.TrimSpace(string(b)); s.token == "" {
			return nil, &ConfigError{Field: "AuthTokenFile", Reason: fmt.Sprintf("%s is empty", cfg.AuthTokenFile)}
		}
	}
	if cfg.TLSCertFile != "" {
		if s.tls, err = loadTLS(cfg); err != nil {
			return nil, err
		}
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	s.instance = hex.EncodeToString(id[:])
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create broker data directory: %w", err)
	}
	lock, err := lockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s.dirLock = lock
	s.topics = newTopicRegistry(s)
	if err := s.topics.openAll(); err != nil {
		s.topics.closeAll()
		lock.Close()
		return nil, err
	}
	return s, nil
}

// loadTLS reads the listener's certificate and, for mutual TLS, the CAs
// client certificates must chain to.
func loadTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, &ConfigError{Field: "TLSCertFile", Reason: err.Error()}
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSClientCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSClientCAFile)
		if err != nil {
			return nil, &ConfigError{Field: "TLSClientCAFile", Reason: err.Error()}
		}
		tc.ClientCAs = x509.NewCertPool()
		if !tc.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Field: "TLSClientCAFile", Reason: cfg.TLSClientCAFile + " holds no PEM certificate"}
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// lockDir takes an exclusive lock on dir so that two brokers never write
// the same logs. The kernel drops it when the process dies, even by kill -9.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock broker data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("broker data directory %s is in use by another broker (%w): stop it or use another --data-dir", dir, err)
	}
	return f, nil
}

// Start opens the listeners and begins serving.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("broker listen on %s: %w", s.cfg.Listen, err)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	if s.cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", s.cfg.AdminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("broker admin listen on %s: %w", s.cfg.AdminListen, err)
		}
		s.adminLn = aln
		s.adminSrv = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		s.startGoroutine(func() {
			if err := s.adminSrv.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("broker admin API stopped", "err", err)
			}
		})
	}
	s.startGoroutine(s.acceptLoop)
	s.startGoroutine(s.retentionLoop)
	s.log.Info("broker started", "listen", ln.Addr().String(), "admin", s.AdminAddr(), "data_dir", s.cfg.DataDir,
		"dedup", s.cfg.Dedup, "auth", s.token != "", "tls", s.tls != nil)
	return nil
}

// startGoroutine runs f in a goroutine that [Server.Close] waits for.
func (s *Server) startGoroutine(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Addr returns the address of the binary protocol listener.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AdminAddr returns the host:port of the admin API, or "" when it is off.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

func (s *Server) acceptLoop() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("broker accept failed; no new connections", "err", err)
			return
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.startGoroutine(c.writeLoop)
		s.startGoroutine(func() {
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
	}
}

func (s *Server) retentionLoop() {
	interval := s.cfg.RetentionInterval
	if interval == 0 {
		interval = defaultRetentionInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.topics.applyRetention()
		select {
		case <-t.C:
		case <-s.quit:
			return
		}
	}
}

// Close stops listening, closes every connection, waits for the broker's
// goroutines and closes the topic logs. Every acknowledged message is
// already fsynced.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	close(s.quit)
	var errs []error
	if s.ln != nil {
		errs = append(errs, ignoreClosed(s.ln.Close()))
	}
	if s.adminSrv != nil {
		// Let admin requests in progress finish, but do not wait for client
		// connections that were opened and never used: net/http only gives
		// those up after 5 s.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := s.adminSrv.Shutdown(ctx); err != nil {
			errs = append(errs, ignoreClosed(s.adminSrv.Close()))
		}
		cancel()
	}
	for _, c := range conns {
		c.close()
	}
	s.wg.Wait()
	errs = append(errs, s.topics.closeAll(), s.dirLock.Close())
	s.log.Info("broker stopped")
	return errors.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Run serves cfg until ctx is done, then shuts down cleanly and returns nil.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return errors.Join(err, s.Close())
	}
	<-ctx.Done()
	return s.Close()
}

func (s *Server) nextProducerName() string {
	return fmt.Sprintf("pgtandem-%s-%d", s.instance, s.producerNames.Add(1)-1)
}
