package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/skiffhq/skiff/api"
)

// sample is one reading of a group's counters.
type sample struct {
	m *api.Metrics
	t time.Time
}

// sampler remembers the last reading per group, to turn cumulative CPU
// time into a rate.
type sampler struct {
	mu   sync.Mutex
	last map[string]sample
}

var samples = &sampler{last: map[string]sample{}}

// podMetrics is what stats need of one running pod.
type podMetrics struct {
	pod       *corev1.Pod
	g         *api.Group
	cur       *api.Metrics
	nanoCores map[string]uint64 // by container; "" is the whole pod
}

// readMetrics reads every running pod's metrics from skiff. With rate, a
// pod read for the first time is read twice, a second apart, so a CPU rate
// is known.
func (k *Kubelet) readMetrics(ctx context.Context, rate bool) []podMetrics {
	var out []podMetrics
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, obj := range k.podInformer.GetStore().List() {
		pod := obj.(*corev1.Pod)
		g := k.groups.get(string(pod.UID))
		if g == nil || g.Status != api.StatusRunning {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			pm, err := k.readOne(ctx, pod, g, rate)
			if err != nil {
				k.log.Debug("metrics", "pod", pod.Namespace+"/"+pod.Name, "err", err)
				return
			}
			mu.Lock()
			out = append(out, pm)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool {
		return out[i].pod.Namespace+"/"+out[i].pod.Name < out[j].pod.Namespace+"/"+out[j].pod.Name
	})
	return out
}

func (k *Kubelet) readOne(ctx context.Context, pod *corev1.Pod, g *api.Group, rate bool) (podMetrics, error) {
	m, err := k.skiff.Metrics(ctx, g.ID)
	if err != nil {
		return podMetrics{}, err
	}
	now := time.Now()
	samples.mu.Lock()
	prev, ok := samples.last[g.ID]
	samples.mu.Unlock()
	if rate && (!ok || now.Sub(prev.t) > 2*time.Minute || now.Sub(prev.t) < 100*time.Millisecond) {
		prev = sample{m: m, t: now}
		sleepCtx(ctx, time.Second)
		if m, err = k.skiff.Metrics(ctx, g.ID); err != nil {
			return podMetrics{}, err
		}
		now = time.Now()
		ok = true
	}
	samples.mu.Lock()
	samples.last[g.ID] = sample{m: m, t: now}
	samples.mu.Unlock()
	pm := podMetrics{pod: pod, g: g, cur: m, nanoCores: map[string]uint64{}}
	if ok && prev.m != nil {
		dt := uint64(now.Sub(prev.t).Nanoseconds())
		if dt > 0 {
			rateOf := func(cur, old uint64) uint64 {
				if cur < old {
					return 0
				}
				return (cur - old) * 1e9 / dt
			}
			pm.nanoCores[""] = rateOf(m.CPUNanos, prev.m.CPUNanos)
			olds := map[string]uint64{}
			for _, c := range prev.m.Containers {
				olds[c.Name] = c.CPUNanos
			}
			for _, c := range m.Containers {
				pm.nanoCores[c.Name] = rateOf(c.CPUNanos, olds[c.Name])
			}
		}
	}
	return pm, nil
}

func u64(v uint64) *uint64 { return &v }

// serveSummary is /stats/summary, the kubelet's Summary API.
func (k *Kubelet) serveSummary(w http.ResponseWriter, r *http.Request) {
	now := metav1.Now()
	pms := k.readMetrics(r.Context(), true)
	sum := statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: k.cfg.NodeName, StartTime: now}}
	var nodeCores, nodeCPU, nodeMem uint64
	for _, pm := range pms {
		ps := statsv1alpha1.PodStats{
			PodRef: statsv1alpha1.PodReference{Name: pm.pod.Name, Namespace: pm.pod.Namespace, UID: string(pm.pod.UID)},
		}
		if pm.g.StartedAt != nil {
			ps.StartTime = metav1.NewTime(*pm.g.StartedAt)
		} else {
			ps.StartTime = metav1.NewTime(pm.g.CreatedAt)
		}
		t := metav1.NewTime(pm.cur.Time)
		ps.CPU = &statsv1alpha1.CPUStats{Time: t, UsageCoreNanoSeconds: u64(pm.cur.CPUNanos)}
		if nc, ok := pm.nanoCores[""]; ok {
			ps.CPU.UsageNanoCores = u64(nc)
			nodeCores += nc
		}
		ps.Memory = &statsv1alpha1.MemoryStats{Time: t, UsageBytes: u64(pm.cur.MemoryUsed), WorkingSetBytes: u64(pm.cur.MemoryUsed), RSSBytes: u64(pm.cur.MemoryRSS)}
		ps.Network = &statsv1alpha1.NetworkStats{Time: t, InterfaceStats: statsv1alpha1.InterfaceStats{Name: "eth0", RxBytes: u64(pm.cur.RxBytes), TxBytes: u64(pm.cur.TxBytes)}}
		ps.ProcessStats = &statsv1alpha1.ProcessStats{ProcessCount: u64(pm.cur.Pids)}
		for _, c := range pm.cur.Containers {
			cs := statsv1alpha1.ContainerStats{Name: c.Name, StartTime: ps.StartTime,
				CPU:    &statsv1alpha1.CPUStats{Time: t, UsageCoreNanoSeconds: u64(c.CPUNanos)},
				Memory: &statsv1alpha1.MemoryStats{Time: t, UsageBytes: u64(c.MemoryUsed), WorkingSetBytes: u64(c.MemoryUsed)},
			}
			if nc, ok := pm.nanoCores[c.Name]; ok {
				cs.CPU.UsageNanoCores = u64(nc)
			}
			ps.Containers = append(ps.Containers, cs)
		}
		nodeCPU += pm.cur.CPUNanos
		nodeMem += pm.cur.MemoryUsed
		sum.Pods = append(sum.Pods, ps)
	}
	sum.Node.CPU = &statsv1alpha1.CPUStats{Time: now, UsageNanoCores: u64(nodeCores), UsageCoreNanoSeconds: u64(nodeCPU)}
	sum.Node.Memory = &statsv1alpha1.MemoryStats{Time: now, UsageBytes: u64(nodeMem), WorkingSetBytes: u64(nodeMem)}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(sum)
}

// serveResourceMetrics is /metrics/resource in the Prometheus text format,
// what metrics-server scrapes.
func (k *Kubelet) serveResourceMetrics(w http.ResponseWriter, r *http.Request) {
	pms := k.readMetrics(r.Context(), false)
	var b strings.Builder
	var nodeCPU, nodeMem uint64
	ms := time.Now().UnixMilli()
	b.WriteString("# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n# TYPE container_cpu_usage_seconds_total counter\n")
	for _, pm := range pms {
		for _, c := range pm.cur.Containers {
			fmt.Fprintf(&b, "container_cpu_usage_seconds_total{container=%q,namespace=%q,pod=%q} %g %d\n", c.Name, pm.pod.Namespace, pm.pod.Name, float64(c.CPUNanos)/1e9, pm.cur.Time.UnixMilli())
		}
	}
	b.WriteString("# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n# TYPE container_memory_working_set_bytes gauge\n")
	for _, pm := range pms {
		for _, c := range pm.cur.Containers {
			fmt.Fprintf(&b, "container_memory_working_set_bytes{container=%q,namespace=%q,pod=%q} %d %d\n", c.Name, pm.pod.Namespace, pm.pod.Name, c.MemoryUsed, pm.cur.Time.UnixMilli())
		}
	}
	b.WriteString("# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds\n# TYPE pod_cpu_usage_seconds_total counter\n")
	for _, pm := range pms {
		fmt.Fprintf(&b, "pod_cpu_usage_seconds_total{namespace=%q,pod=%q} %g %d\n", pm.pod.Namespace, pm.pod.Name, float64(pm.cur.CPUNanos)/1e9, pm.cur.Time.UnixMilli())
		nodeCPU += pm.cur.CPUNanos
	}
	b.WriteString("# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes\n# TYPE pod_memory_working_set_bytes gauge\n")
	for _, pm := range pms {
		fmt.Fprintf(&b, "pod_memory_working_set_bytes{namespace=%q,pod=%q} %d %d\n", pm.pod.Namespace, pm.pod.Name, pm.cur.MemoryUsed, pm.cur.Time.UnixMilli())
		nodeMem += pm.cur.MemoryUsed
	}
	fmt.Fprintf(&b, "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total %g %d\n", float64(nodeCPU)/1e9, ms)
	fmt.Fprintf(&b, "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n# TYPE node_memory_working_set_bytes gauge\nnode_memory_working_set_bytes %d %d\n", nodeMem, ms)
	b.WriteString("# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n")
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write([]byte(b.String()))
}

// cpuQuantity and memQuantity format usage as the metrics API does.
func cpuQuantity(nanoCores uint64) resource.Quantity {
	return *resource.NewScaledQuantity(int64(nanoCores), resource.Nano)
}

func memQuantity(b uint64) resource.Quantity {
	return *resource.NewQuantity(int64(b), resource.BinarySI)
}
