// Package kubelet is skiff's virtual node: it registers a Kubernetes Node
// backed by a skiff cluster, runs the pods bound to it as container groups,
// pushes their status back as skiff reports changes, and serves the kubelet
// API (logs, exec, attach, port-forward, stats) so kubectl works on them.
// It is built on client-go alone; see README.md for the flow.
package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/skiffhq/skiff/client"
)

// Config says which cluster and which skiff the virtual node joins.
type Config struct {
	// KubeConfig is a kubeconfig file; "" means in-cluster config.
	KubeConfig string
	// NodeName is the Node object's name.
	NodeName string
	// NodeIP is the address the apiserver reaches the kubelet API at; it is
	// the node's InternalIP.
	NodeIP string
	// Port is the kubelet API's port (10250 by default).
	Port int
	// ClientCAFile, when set, authenticates client certificates (the
	// apiserver's --kubelet-client-certificate) against these CAs.
	ClientCAFile string
	// RequestHeaderCAFile is the CA of the apiserver's front-proxy client
	// certificate; with ServeMetricsAPI the node registers the
	// metrics.k8s.io API (kubectl top) and serves it for its pods.
	RequestHeaderCAFile string
	ServeMetricsAPI     bool
	// TLSCertFile and TLSKeyFile serve the kubelet API; when empty a
	// self-signed certificate for NodeIP is made at start.
	TLSCertFile, TLSKeyFile string
	// PodAPIServer is the apiserver URL pods are given (KUBERNETES_SERVICE_*).
	// Empty: the kubeconfig's server, with a loopback host replaced by NodeIP.
	PodAPIServer string
	// Capacity overrides the capacity reported for the node; zero fields
	// come from skiff's hosts.
	Capacity corev1.ResourceList
	// Workers is the number of pods synced at once.
	Workers int
	// KubeletVersion is what the node reports.
	KubeletVersion string
	// Skiff is the client of the skiff API the groups are made through.
	Skiff *client.Client
	// Logger logs; nil means slog.Default().
	Logger *slog.Logger
	// ResyncPeriod bounds how stale a mounted volume (ConfigMap, Secret,
	// token) can be when its change event was missed.
	ResyncPeriod time.Duration
	// KubeAPIQPS and KubeAPIBurst bound this node's requests to the
	// apiserver (client-go's token bucket); 0 means 1000 and 2000. A burst
	// of N pods costs about 3N requests (a token and two status writes
	// each), so a limit like a node kubelet's 50 would take 30 s for 500.
	KubeAPIQPS   float32
	KubeAPIBurst int
}

// Kubelet is one running virtual node.
type Kubelet struct {
	cfg    Config
	log    *slog.Logger
	kube   kubernetes.Interface
	rest   *rest.Config
	skiff  *client.Client
	tr     *translator
	rec    record.EventRecorder
	bcast  record.EventBroadcaster
	queue  workqueue.TypedRateLimitingInterface[string]
	groups *groupCache

	podInformer cache.SharedIndexInformer
	pods        listersv1.PodLister
	cms         listersv1.ConfigMapLister
	secrets     listersv1.SecretLister
	cmInformer  cache.SharedIndexInformer
	secInformer cache.SharedIndexInformer

	tokens   *tokenCache
	vols     *volumeState
	creates  *createBatcher
	creating inflightSet    // pods whose create is submitted, not answered
	pushed   pushedStatuses // statuses written, until the informer has them

	ready     chan struct{}
	readyOnce sync.Once
	// Addr is the kubelet API's listen address, once Ready.
	Addr      string
	tlsConfig *tls.Config
}

// New checks cfg and connects to the apiserver (lazily: nothing is called
// until Run).
func New(cfg Config) (*Kubelet, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("kubelet: a node name is required")
	}
	if cfg.Skiff == nil {
		return nil, errors.New("kubelet: a skiff client is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 128
	}
	if cfg.KubeAPIQPS <= 0 {
		cfg.KubeAPIQPS = 1000
	}
	if cfg.KubeAPIBurst <= 0 {
		cfg.KubeAPIBurst = 2000
	}
	if cfg.Port == 0 {
		cfg.Port = 10250
	}
	if cfg.KubeletVersion == "" {
		cfg.KubeletVersion = "v1.37.2"
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = time.Minute
	}
	if cfg.NodeIP == "" {
		ip, err := defaultIP()
		if err != nil {
			return nil, fmt.Errorf("kubelet: no --node-ip given and none found: %w", err)
		}
		cfg.NodeIP = ip
	}
	var rc *rest.Config
	var err error
	if cfg.KubeConfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.KubeConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet: kubeconfig: %w", err)
	}
	// Hundreds of pods change at once in a burst; client-go's default 5
	// QPS would make status writes the bottleneck.
	rc.QPS, rc.Burst = cfg.KubeAPIQPS, cfg.KubeAPIBurst
	rc.UserAgent = "skiff-kubelet/" + cfg.NodeName
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	k := &Kubelet{
		cfg:    cfg,
		log:    cfg.Logger.With("node", cfg.NodeName),
		kube:   kube,
		rest:   rc,
		skiff:  cfg.Skiff,
		groups: newGroupCache(),
		ready:  make(chan struct{}),
		vols:   newVolumeState(),
	}
	k.creates = newCreateBatcher(cfg.Skiff)
	k.tokens = newTokenCache(kube)
	apiURL, err := podAPIServer(cfg, rc)
	if err != nil {
		return nil, err
	}
	k.tr = &translator{node: cfg.NodeName, src: k, apiURL: apiURL}
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedMaxOfRateLimiter(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
		),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "skiff-pods"})
	return k, nil
}

// podAPIServer is the apiserver URL given to pods.
func podAPIServer(cfg Config, rc *rest.Config) (*url.URL, error) {
	raw := cfg.PodAPIServer
	if raw == "" {
		raw = rc.Host
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("kubelet: apiserver URL for pods %q: not a URL", raw)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, "443"
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		// A group has its own network namespace: its loopback is not the
		// host's. The node address reaches the host from inside.
		host = cfg.NodeIP
	}
	u.Host = net.JoinHostPort(host, port)
	return u, nil
}

// Ready is closed once the node is registered, both caches are in sync and
// the kubelet API listens.
func (k *Kubelet) Ready() <-chan struct{} { return k.ready }

// Run registers the node and serves until ctx is done. Stopping it leaves
// every group running: the next Run adopts them.
func (k *Kubelet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	k.bcast = record.NewBroadcaster(record.WithContext(ctx))
	k.bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.kube.CoreV1().Events("")})
	defer k.bcast.Shutdown()
	k.rec = k.bcast.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-kubelet", Host: k.cfg.NodeName})

	srv, ln, err := k.listen()
	if err != nil {
		return err
	}
	k.Addr = ln.Addr().String()
	if err := k.registerNode(ctx); err != nil {
		ln.Close()
		return err
	}

	podFactory := informers.NewSharedInformerFactoryWithOptions(k.kube, 0,
		informers.WithTweakListOptions(func(o *metav1ListOptions) {
			o.FieldSelector = "spec.nodeName=" + k.cfg.NodeName
		}))
	k.podInformer = podFactory.Core().V1().Pods().Informer()
	k.pods = podFactory.Core().V1().Pods().Lister()
	srcFactory := informers.NewSharedInformerFactory(k.kube, 0)
	k.cmInformer = srcFactory.Core().V1().ConfigMaps().Informer()
	k.secInformer = srcFactory.Core().V1().Secrets().Informer()
	k.cms = srcFactory.Core().V1().ConfigMaps().Lister()
	k.secrets = srcFactory.Core().V1().Secrets().Lister()
	k.addHandlers()
	podFactory.Start(ctx.Done())
	srcFactory.Start(ctx.Done())

	if k.cfg.ServeMetricsAPI {
		if err := k.registerMetricsAPI(ctx); err != nil {
			k.log.Warn("register the metrics API", "err", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, errServerClosed) {
			errc <- fmt.Errorf("kubelet API: %w", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}()
	wg.Add(1)
	go func() { defer wg.Done(); k.heartbeat(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); k.watchGroups(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); k.creates.run(ctx) }()

	if !cache.WaitForCacheSync(ctx.Done(), k.podInformer.HasSynced, k.cmInformer.HasSynced, k.secInformer.HasSynced) {
		return ctx.Err()
	}
	select {
	case <-k.groups.synced:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Reconcile: every pod and every group is looked at once; a group with
	// no pod is deleted, a pod with no group gets one.
	for _, key := range k.allKeys() {
		k.queue.Add(key)
	}
	for i := 0; i < k.cfg.Workers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); k.worker(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); k.resync(ctx) }()
	go func() { <-ctx.Done(); k.queue.ShutDown() }()
	k.readyOnce.Do(func() { close(k.ready) })
	k.log.Info("virtual node ready", "api", k.Addr, "pods", len(k.podInformer.GetStore().ListKeys()), "groups", k.groups.len())

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// resync looks at every pod now and then, so that a missed change of a
// mounted source or a token due for rotation is caught.
func (k *Kubelet) resync(ctx context.Context) {
	t := time.NewTicker(k.cfg.ResyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, key := range k.allKeys() {
				k.queue.Add(key)
			}
		}
	}
}

func (k *Kubelet) allKeys() []string {
	seen := map[string]bool{}
	var keys []string
	for _, key := range k.podInformer.GetStore().ListKeys() {
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	for _, key := range k.groups.podKeys() {
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	return keys
}

func defaultIP() (string, error) {
	// The source address of a route out; nothing is sent.
	c, err := net.Dial("udp", "192.0.2.1:9")
	if err == nil {
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address")
}

func portString(p int) string { return strconv.Itoa(p) }
