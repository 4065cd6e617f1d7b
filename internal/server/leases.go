package server

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseLog records the etcd leases this replica grants (its election
// session, the alive keys of its agents) in its data dir. A replica that
// crashed cannot revoke them, and they would outlive it by their TTL: the
// old leader key would block the new election, and hosts would look alive
// before their agents reconnect. On start the replica revokes what its
// previous life left.
type leaseLog struct {
	path string
	mu   sync.Mutex
}

func (l *leaseLog) record(id clientv3.LeaseID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%x\n", int64(id))
}

// revokeStale revokes every lease the previous run recorded and forgets them.
func (l *leaseLog) revokeStale(ctx context.Context, cli *clientv3.Client) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return 0
	}
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 16, 64)
		if err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := cli.Revoke(rctx, clientv3.LeaseID(id)); err == nil {
			n++
		}
		cancel()
	}
	f.Close()
	_ = os.Remove(l.path)
	return n
}
