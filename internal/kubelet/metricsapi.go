package kubelet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// The resource metrics API (metrics.k8s.io/v1beta1, what `kubectl top`
// reads), served by this node itself for its own pods when
// Config.ServeMetricsAPI is set, in place of a metrics-server. The
// apiserver's aggregator proxies to it: it authenticates with its
// front-proxy client certificate (checked against RequestHeaderCAFile) and
// names the user in X-Remote-User / X-Remote-Group; each request is then
// authorized with a SubjectAccessReview on pods.metrics.k8s.io.

const metricsGV = "metrics.k8s.io/v1beta1"

func (k *Kubelet) metricsAPIRoutes(mux *http.ServeMux) {
	if !k.cfg.ServeMetricsAPI {
		return
	}
	h := func(f func(w http.ResponseWriter, r *http.Request)) http.Handler { return k.frontProxied(f) }
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1", h(k.serveMetricsDiscovery))
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1/{$}", h(k.serveMetricsDiscovery))
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1/pods", h(k.servePodMetrics))
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods", h(k.servePodMetrics))
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}", h(k.servePodMetrics))
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1/nodes", h(k.serveNodeMetrics))
	mux.Handle("GET /apis/metrics.k8s.io/v1beta1/nodes/{name}", h(k.serveNodeMetrics))
}

// frontProxied accepts only the apiserver's aggregator and authorizes the
// user it names.
func (k *Kubelet) frontProxied(f func(w http.ResponseWriter, r *http.Request)) http.Handler {
	var pool *x509.CertPool
	if k.cfg.RequestHeaderCAFile != "" {
		if b, err := os.ReadFile(k.cfg.RequestHeaderCAFile); err == nil {
			pool = x509.NewCertPool()
			pool.AppendCertsFromPEM(b)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pool == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "the metrics API is served to the apiserver's aggregator only")
			return
		}
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := r.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "front-proxy certificate: "+err.Error())
			return
		}
		userName := r.Header.Get("X-Remote-User")
		if strings.HasSuffix(r.URL.Path, "/v1beta1") || strings.HasSuffix(r.URL.Path, "/v1beta1/") {
			f(w, r) // discovery: any authenticated caller
			return
		}
		if userName == "" {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "no X-Remote-User")
			return
		}
		resource := "pods"
		if strings.Contains(r.URL.Path, "/nodes") {
			resource = "nodes"
		}
		verb := "list"
		if r.PathValue("name") != "" {
			verb = "get"
		}
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: userName, Groups: r.Header.Values("X-Remote-Group"),
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "metrics.k8s.io", Version: "v1beta1",
				Resource: resource, Verb: verb, Namespace: r.PathValue("ns"), Name: r.PathValue("name")},
		}}
		res, err := k.kube.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), sar, metav1.CreateOptions{})
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		if !res.Status.Allowed {
			writeStatus(w, http.StatusForbidden, "Forbidden", "user "+userName+" may not "+verb+" "+resource+".metrics.k8s.io")
			return
		}
		f(w, r)
	})
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: metav1.StatusReason(reason), Message: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (k *Kubelet) serveMetricsDiscovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: metricsGV,
		APIResources: []metav1.APIResource{
			{Name: "nodes", Kind: "NodeMetrics", Namespaced: false, Verbs: []string{"get", "list"}},
			{Name: "pods", Kind: "PodMetrics", Namespaced: true, Verbs: []string{"get", "list"}},
		},
	})
}

func (k *Kubelet) servePodMetrics(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	var items []metricsv1beta1.PodMetrics
	for _, pm := range k.readMetrics(r.Context(), true) {
		if (ns != "" && pm.pod.Namespace != ns) || (name != "" && pm.pod.Name != name) {
			continue
		}
		m := metricsv1beta1.PodMetrics{
			ObjectMeta: metav1.ObjectMeta{Name: pm.pod.Name, Namespace: pm.pod.Namespace, Labels: pm.pod.Labels,
				CreationTimestamp: metav1.Now()},
			Timestamp: metav1.NewTime(pm.cur.Time),
			Window:    metav1.Duration{Duration: time.Second},
		}
		for _, c := range pm.cur.Containers {
			m.Containers = append(m.Containers, metricsv1beta1.ContainerMetrics{Name: c.Name, Usage: corev1.ResourceList{
				corev1.ResourceCPU: cpuQuantity(pm.nanoCores[c.Name]), corev1.ResourceMemory: memQuantity(c.MemoryUsed)}})
		}
		items = append(items, m)
	}
	if name != "" {
		if len(items) == 0 {
			writeStatus(w, http.StatusNotFound, "NotFound", "podmetrics \""+name+"\" not found")
			return
		}
		items[0].TypeMeta = metav1.TypeMeta{Kind: "PodMetrics", APIVersion: metricsGV}
		writeJSON(w, items[0])
		return
	}
	writeJSON(w, metricsv1beta1.PodMetricsList{TypeMeta: metav1.TypeMeta{Kind: "PodMetricsList", APIVersion: metricsGV}, Items: items})
}

func (k *Kubelet) serveNodeMetrics(w http.ResponseWriter, r *http.Request) {
	if n := r.PathValue("name"); n != "" && n != k.cfg.NodeName {
		writeStatus(w, http.StatusNotFound, "NotFound", "nodemetrics \""+n+"\" not found")
		return
	}
	var cores, mem uint64
	for _, pm := range k.readMetrics(r.Context(), true) {
		cores += pm.nanoCores[""]
		mem += pm.cur.MemoryUsed
	}
	m := metricsv1beta1.NodeMetrics{
		TypeMeta:   metav1.TypeMeta{Kind: "NodeMetrics", APIVersion: metricsGV},
		ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, CreationTimestamp: metav1.Now()},
		Timestamp:  metav1.Now(), Window: metav1.Duration{Duration: time.Second},
		Usage: corev1.ResourceList{corev1.ResourceCPU: cpuQuantity(cores), corev1.ResourceMemory: memQuantity(mem)},
	}
	if r.PathValue("name") != "" {
		writeJSON(w, m)
		return
	}
	m.TypeMeta = metav1.TypeMeta{}
	writeJSON(w, metricsv1beta1.NodeMetricsList{TypeMeta: metav1.TypeMeta{Kind: "NodeMetricsList", APIVersion: metricsGV}, Items: []metricsv1beta1.NodeMetrics{m}})
}

// registerMetricsAPI points the apiserver's aggregator at this node: a
// Service without selector, its Endpoints (the node address; the apiserver
// must run with --enable-aggregator-routing) and the APIService.
func (k *Kubelet) registerMetricsAPI(ctx context.Context) error {
	const ns, name = "kube-system", "skiff-metrics"
	port := int32(k.port())
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "skiff-kubelet"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(port)}}},
	}
	if _, err := k.kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	ep := &corev1.Endpoints{ //nolint:staticcheck // the aggregator still resolves through Endpoints/slices mirrored from it
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck
			Addresses: []corev1.EndpointAddress{{IP: k.cfg.NodeIP}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: port}},
		}},
	}
	eps := k.kube.CoreV1().Endpoints(ns) //nolint:staticcheck
	if old, err := eps.Get(ctx, name, metav1.GetOptions{}); err == nil {
		old.Subsets = ep.Subsets
		if _, err := eps.Update(ctx, old, metav1.UpdateOptions{}); err != nil {
			return err
		}
	} else if _, err := eps.Create(ctx, ep, metav1.CreateOptions{}); err != nil {
		return err
	}
	// The APIService, written as plain JSON: the aggregator's Go types are
	// not worth a module for one object.
	apisvc := map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1beta1.metrics.k8s.io"},
		"spec": map[string]any{
			"service": map[string]any{"namespace": ns, "name": name, "port": 443},
			"group":   "metrics.k8s.io", "version": "v1beta1",
			"insecureSkipTLSVerify": true, "groupPriorityMinimum": 100, "versionPriority": 100,
		},
	}
	body, _ := json.Marshal(apisvc)
	res := k.kube.CoreV1().RESTClient().Post().AbsPath("/apis/apiregistration.k8s.io/v1/apiservices").
		SetHeader("Content-Type", "application/json").Body(body).Do(ctx)
	if err := res.Error(); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}
