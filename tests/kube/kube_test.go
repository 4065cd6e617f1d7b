package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffhq/skiff/api"
)

// podTemplate is the pod spec every scenario uses: it tolerates the
// virtual node's taint and selects it.
const podSpecYAML = `
      nodeSelector: {type: virtual-kubelet}
      tolerations: [{key: virtual-kubelet.io/provider, operator: Exists}]
      terminationGracePeriodSeconds: 1`

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// namespace makes a fresh namespace for one test and deletes it after.
func namespace(t *testing.T) string {
	t.Helper()
	requireEnv(t)
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	ctx := ctxT(t, 30*time.Second)
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The service-account controller makes "default"; pods need it.
	if err := poll(30*time.Second, func() (bool, error) {
		_, err := e.kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no default service account in %s", ns)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = e.kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		_ = poll(60*time.Second, func() (bool, error) {
			pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0, nil
		})
	})
	return ns
}

func apply(t *testing.T, ns, yaml string) {
	t.Helper()
	out, err := e.kubectl(ctxT(t, 60*time.Second), yaml, "-n", ns, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.kubectl(ctxT(t, 120*time.Second), "", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// readyPods counts the Ready pods matching selector.
func readyPods(ctx context.Context, ns, selector string) (ready, total int, err error) {
	pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return 0, 0, err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		total++
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	return ready, total, nil
}

func waitReady(t *testing.T, ns, selector string, want int, timeout time.Duration) {
	t.Helper()
	var r, n int
	err := poll(timeout, func() (bool, error) {
		var err error
		r, n, err = readyPods(context.Background(), ns, selector)
		return err == nil && r == want && n == want, nil
	})
	if err != nil {
		t.Fatalf("%s: %d of %d pods Ready, want %d, after %s\n%s", selector, r, n, want, timeout,
			kubectl(t, "-n", ns, "get", "pods", "-o", "wide"))
	}
}

// groupsOf lists the skiff groups made for pods of namespace ns.
func groupsOf(t *testing.T, ns string) []api.Group {
	t.Helper()
	gs, err := e.groupsOfNode(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Group
	for _, g := range gs {
		if g.Labels["k8s.skiff.io/namespace"] == ns {
			out = append(out, g)
		}
	}
	return out
}

func waitGroups(t *testing.T, ns string, want int, timeout time.Duration) {
	t.Helper()
	var n int
	if err := poll(timeout, func() (bool, error) {
		n = len(groupsOf(t, ns))
		return n == want, nil
	}); err != nil {
		t.Fatalf("namespace %s: %d groups, want %d", ns, n, want)
	}
}

func deployment(name string, replicas int, cmd string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:%s
      containers:
      - name: app
        image: busybox
        imagePullPolicy: IfNotPresent
        command: [sh, -c, %q]
`, name, replicas, name, name, podSpecYAML, cmd)
}

func TestNodeRegistered(t *testing.T) {
	requireEnv(t)
	n, err := e.kube.CoreV1().Nodes().Get(ctxT(t, 10*time.Second), e.nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taint := false
	for _, tn := range n.Spec.Taints {
		if tn.Key == "virtual-kubelet.io/provider" && tn.Value == "skiff" && tn.Effect == corev1.TaintEffectNoSchedule {
			taint = true
		}
	}
	if !taint {
		t.Errorf("taints %v: no virtual-kubelet.io/provider=skiff:NoSchedule", n.Spec.Taints)
	}
	if n.Labels["type"] != "virtual-kubelet" || n.Labels["kubernetes.io/hostname"] != e.nodeName {
		t.Errorf("labels %v", n.Labels)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		t.Errorf("node not Ready: %+v", n.Status.Conditions)
	}
	if cpu := n.Status.Capacity.Cpu(); cpu.IsZero() {
		t.Errorf("no cpu capacity: %v", n.Status.Capacity)
	}
	lease, err := e.kube.CoordinationV1().Leases("kube-node-lease").Get(ctxT(t, 10*time.Second), e.nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	if lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > 30*time.Second {
		t.Errorf("lease not renewed lately: %v", lease.Spec.RenewTime)
	}
}

func TestDeploymentScale(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, deployment("web", 3, "echo started; exec sleep 3600"))
	waitReady(t, ns, "app=web", 3, 90*time.Second)
	waitGroups(t, ns, 3, 10*time.Second)

	// Status details pushed back from the groups.
	pods, err := e.kube.CoreV1().Pods(ns).List(ctxT(t, 10*time.Second), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.Status.StartTime == nil {
			t.Errorf("pod %s: phase %s ip %q start %v", p.Name, p.Status.Phase, p.Status.PodIP, p.Status.StartTime)
		}
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
			t.Errorf("pod %s: container statuses %+v", p.Name, p.Status.ContainerStatuses)
		}
	}
	for _, g := range groupsOf(t, ns) {
		if g.Labels["k8s.skiff.io/uid"] == "" || g.Labels["k8s.skiff.io/pod"] == "" {
			t.Errorf("group %s labels %v", g.ID, g.Labels)
		}
	}

	kubectl(t, "-n", ns, "scale", "deployment/web", "--replicas=5")
	waitReady(t, ns, "app=web", 5, 90*time.Second)
	waitGroups(t, ns, 5, 10*time.Second)
	kubectl(t, "-n", ns, "scale", "deployment/web", "--replicas=1")
	waitReady(t, ns, "app=web", 1, 90*time.Second)
	waitGroups(t, ns, 1, 60*time.Second)
}

func TestJobCompletes(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  completions: 2
  parallelism: 2
  backoffLimit: 0
  template:
    spec:%s
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
        imagePullPolicy: IfNotPresent
        command: [sh, -c, "echo computing; sleep 1; echo done"]
`, podSpecYAML))
	out := kubectl(t, "-n", ns, "wait", "--for=condition=complete", "job/pi", "--timeout=90s")
	if !strings.Contains(out, "condition met") {
		t.Fatalf("job: %s", out)
	}
	pods, err := e.kube.CoreV1().Pods(ns).List(ctxT(t, 10*time.Second), metav1.ListOptions{LabelSelector: "job-name=pi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("pod %s phase %s", p.Name, p.Status.Phase)
		}
		cs := p.Status.ContainerStatuses
		if len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 0 || cs[0].State.Terminated.Reason != "Completed" {
			t.Errorf("pod %s: %+v", p.Name, cs)
		}
		logs := kubectl(t, "-n", ns, "logs", p.Name)
		if !strings.Contains(logs, "computing") || !strings.Contains(logs, "done") {
			t.Errorf("logs of %s: %q", p.Name, logs)
		}
	}
}

func TestFailingContainerExitCode(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:%s
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "exit 3"]
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	var p *corev1.Pod
	err := poll(60*time.Second, func() (bool, error) {
		var err error
		p, err = e.kube.CoreV1().Pods(ns).Get(context.Background(), "bad", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		t.Fatalf("pod not Failed: %+v", p.Status)
	}
	cs := p.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 3 {
		t.Fatalf("container statuses %+v", cs)
	}
}

func TestUnsupportedPodFailsClearly(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:%s
  hostNetwork: true
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sleep, "100"]
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	var p *corev1.Pod
	err := poll(60*time.Second, func() (bool, error) {
		var err error
		p, err = e.kube.CoreV1().Pods(ns).Get(context.Background(), "hostnet", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		t.Fatalf("pod not Failed: %+v", p.Status)
	}
	if p.Status.Reason != "UnsupportedPodSpec" || !strings.Contains(p.Status.Message, "hostNetwork") {
		t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
	}
	if err := poll(30*time.Second, func() (bool, error) {
		evs, err := e.kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, ev := range evs.Items {
			if ev.Reason == "UnsupportedPodSpec" && ev.InvolvedObject.Name == "hostnet" {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Errorf("no UnsupportedPodSpec event")
	}
	if gs := groupsOf(t, ns); len(gs) != 0 {
		t.Errorf("groups made for an unsupported pod: %d", len(gs))
	}
}

// TestKubeletRestart kills `skiff kubelet`, changes the cluster while it is
// down, and checks that the restarted one reconciles: no orphan group and
// no pod without its group.
func TestKubeletRestart(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, deployment("keep", 2, "exec sleep 3600"))
	waitReady(t, ns, "app=keep", 2, 90*time.Second)
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: doomed}
spec:%s
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	waitReady(t, ns, "", 3, 90*time.Second)
	before := map[string]bool{}
	for _, g := range groupsOf(t, ns) {
		before[g.ID] = true
	}

	e.kubelet.kill9()
	ctx := ctxT(t, 60*time.Second)
	// While it is down: force-delete a pod (its group becomes an orphan)
	// and scale up (new pods have no group).
	if err := e.kube.CoreV1().Pods(ns).Delete(ctx, "doomed", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "scale", "deployment/keep", "--replicas=4")
	if err := poll(30*time.Second, func() (bool, error) {
		_, n, err := readyPods(ctx, ns, "app=keep")
		return err == nil && n == 4, nil
	}); err != nil {
		t.Fatal("the ReplicaSet did not make the new pods")
	}
	if err := e.startKubelet(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "app=keep", 4, 90*time.Second)
	waitGroups(t, ns, 4, 60*time.Second)
	// The two pods that ran before kept their groups (adopted, not re-made).
	kept := 0
	for _, g := range groupsOf(t, ns) {
		if before[g.ID] {
			kept++
		}
	}
	if kept != 2 {
		t.Errorf("%d of the 2 running pods kept their groups across the restart", kept)
	}
	if _, err := e.kube.CoreV1().Pods(ns).Get(ctx, "doomed", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("doomed pod: %v", err)
	}
}
