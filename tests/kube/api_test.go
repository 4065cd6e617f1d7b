package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// pod makes one pod running cmd in busybox and waits until it is Ready.
func runPod(t *testing.T, ns, name, extra, cmd string) {
	t.Helper()
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {pod: %s}}
spec:%s
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, %q]
%s`, name, name, strings.ReplaceAll(podSpecYAML, "\n    ", "\n"), cmd, extra))
	waitReady(t, ns, "pod="+name, 1, 90*time.Second)
}

func TestLogsFollow(t *testing.T) {
	ns := namespace(t)
	// Each instance prints its start, then a line a second; the first
	// instance exits 1 after 2 lines so that --previous has something.
	runPod(t, ns, "talker", "", `if [ -e /tmp/x ]; then :; fi; n=0; echo instance-start; while true; do n=$((n+1)); echo line-$n; sleep 1; done`)
	out := kubectl(t, "-n", ns, "logs", "talker")
	if !strings.Contains(out, "instance-start") {
		t.Fatalf("logs: %q", out)
	}
	// -f streams: read until a later line shows up.
	ctx := ctxT(t, 30*time.Second)
	cmd := exec.CommandContext(ctx, filepath.Join(e.tools, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "logs", "-f", "--tail=1", "talker")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	lines := 0
	for sc.Scan() && lines < 3 {
		lines++
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if lines < 3 {
		t.Fatalf("logs -f gave %d lines", lines)
	}
	out = kubectl(t, "-n", ns, "logs", "--tail=2", "talker")
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 2 {
		t.Errorf("--tail=2 gave %d lines: %q", n, out)
	}
}

func TestPreviousLogsAndRestartCount(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:%s
  restartPolicy: Always
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo run-$(date +%%s%%N); sleep 1; exit 2"]
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	var p *corev1.Pod
	if err := poll(60*time.Second, func() (bool, error) {
		var err error
		p, err = e.kube.CoreV1().Pods(ns).Get(context.Background(), "crasher", metav1.GetOptions{})
		return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1 &&
			p.Status.ContainerStatuses[0].LastTerminationState.Terminated != nil, nil
	}); err != nil {
		t.Fatalf("no restart seen: %+v", p.Status.ContainerStatuses)
	}
	lt := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if lt.ExitCode != 2 {
		t.Errorf("last termination exit code %d, want 2", lt.ExitCode)
	}
	out := kubectl(t, "-n", ns, "logs", "--previous", "crasher")
	if !strings.Contains(out, "run-") {
		t.Errorf("logs --previous: %q", out)
	}
}

func TestExec(t *testing.T) {
	ns := namespace(t)
	runPod(t, ns, "shell", "", "exec sleep 3600")
	// Non-interactive, with stdin and an exit code.
	out, err := e.kubectl(ctxT(t, 30*time.Second), "hello-stdin\n", "-n", ns, "exec", "-i", "shell", "--", "sh", "-c", "cat; echo to-stderr >&2; exit 7")
	if !strings.Contains(out, "hello-stdin") || !strings.Contains(out, "to-stderr") {
		t.Errorf("exec output %q", out)
	}
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("exec exit: %v, want exit status 7", err)
	}
	// Interactive with a TTY: kubectl exec -it under a pseudo-terminal.
	cmd := exec.Command(filepath.Join(e.tools, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "exec", "-it", "shell", "--", "sh")
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf lockedBuffer
	go func() { _, _ = io.Copy(&buf, f) }()
	time.Sleep(500 * time.Millisecond)
	fmt.Fprintf(f, "echo tty-$((6*7)); test -t 0 && echo is-a-tty\n")
	if err := poll(20*time.Second, func() (bool, error) {
		s := buf.String()
		return strings.Contains(s, "tty-42") && strings.Contains(s, "is-a-tty"), nil
	}); err != nil {
		t.Errorf("exec -it output: %q", buf.String())
	}
	fmt.Fprintf(f, "exit 0\n")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exec -it: %v\n%s", err, buf.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Errorf("exec -it did not end after exit: %q", buf.String())
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func TestAttach(t *testing.T) {
	ns := namespace(t)
	runPod(t, ns, "ticker", "", "n=0; while true; do n=$((n+1)); echo tick-$n; sleep 1; done")
	ctx := ctxT(t, 30*time.Second)
	cmd := exec.CommandContext(ctx, filepath.Join(e.tools, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "attach", "ticker", "-c", "c")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := poll(20*time.Second, func() (bool, error) {
		return regexp.MustCompile(`tick-\d+`).MatchString(out.String()), nil
	}); err != nil {
		t.Fatalf("attach output: %q", out.String())
	}
}

// TestAttachInput: kubectl attach -i reaches the stdin of a container
// started with stdin: true, and -t gives it a terminal whose size follows
// kubectl's.
func TestAttachInput(t *testing.T) {
	ns := namespace(t)
	runPod(t, ns, "echoer", "    stdin: true\n", "while read l; do echo got-$l; done")
	ctx := ctxT(t, 40*time.Second)
	cmd := exec.CommandContext(ctx, filepath.Join(e.tools, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "attach", "-i", "echoer", "-c", "c")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Lines sent before the stream is up may be lost to nobody; keep
	// sending until one comes back.
	n := 0
	if err := poll(30*time.Second, func() (bool, error) {
		n++
		fmt.Fprintf(in, "line%d\n", n)
		return regexp.MustCompile(`got-line\d+`).MatchString(out.String()), nil
	}); err != nil {
		t.Fatalf("attach -i: no echo of the input: %q", out.String())
	}

	// A TTY container: a shell on a terminal, resized to kubectl's.
	runPod(t, ns, "term", "    stdin: true\n    tty: true\n", "exec sh")
	tcmd := exec.Command(filepath.Join(e.tools, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "attach", "-it", "term", "-c", "c")
	f, err := pty.StartWithSize(tcmd, &pty.Winsize{Rows: 33, Cols: 121})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tcmd.Process.Kill(); _ = tcmd.Wait(); f.Close() }()
	var buf lockedBuffer
	go func() { _, _ = io.Copy(&buf, f) }()
	if err := poll(30*time.Second, func() (bool, error) {
		fmt.Fprintf(f, "echo size-$(stty size | tr ' ' x)\n")
		time.Sleep(300 * time.Millisecond)
		return strings.Contains(buf.String(), "size-33x121"), nil
	}); err != nil {
		t.Fatalf("attach -it: terminal size not seen: %q", buf.String())
	}
	if err := pty.Setsize(f, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	if err := poll(20*time.Second, func() (bool, error) {
		fmt.Fprintf(f, "echo size-$(stty size | tr ' ' x)\n")
		time.Sleep(300 * time.Millisecond)
		return strings.Contains(buf.String(), "size-40x100"), nil
	}); err != nil {
		t.Fatalf("attach -it: resize not seen: %q", buf.String())
	}
}

func TestPortForward(t *testing.T) {
	ns := namespace(t)
	runPod(t, ns, "web", "    ports: [{containerPort: 8080}]\n",
		"mkdir -p /www; echo hello-from-pod > /www/index.html; exec httpd -f -p 8080 -h /www")
	local := mustPort()
	ctx := ctxT(t, 60*time.Second)
	cmd := exec.CommandContext(ctx, filepath.Join(e.tools, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "port-forward", "pod/web", fmt.Sprintf("%d:8080", local))
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var body string
	if err := poll(30*time.Second, func() (bool, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", local))
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, "hello-from-pod"), nil
	}); err != nil {
		t.Fatalf("port-forward: body %q; kubectl: %s", body, out.String())
	}
}

func TestTop(t *testing.T) {
	ns := namespace(t)
	runPod(t, ns, "busy", "", "while true; do :; done")
	var out string
	if err := poll(60*time.Second, func() (bool, error) {
		var err error
		out, err = e.kubectl(context.Background(), "", "-n", ns, "top", "pod", "busy")
		return err == nil && strings.Contains(out, "busy"), nil
	}); err != nil {
		t.Fatalf("kubectl top pod: %s", out)
	}
	// A busy loop uses well above 0 CPU.
	if m := regexp.MustCompile(`busy\s+(\d+)m`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("top: %q", out)
	}
	// The kubelet's own stats summary, through the apiserver's node proxy.
	raw := kubectl(t, "get", "--raw", "/api/v1/nodes/"+e.nodeName+"/proxy/stats/summary")
	if !strings.Contains(raw, `"name":"busy"`) || !strings.Contains(raw, "usageNanoCores") {
		t.Errorf("stats summary: %.400s", raw)
	}
	res := kubectl(t, "get", "--raw", "/api/v1/nodes/"+e.nodeName+"/proxy/metrics/resource")
	if !strings.Contains(res, `container_cpu_usage_seconds_total{container="c",namespace="`+ns+`",pod="busy"}`) {
		t.Errorf("metrics/resource: %.400s", res)
	}
}

func TestEnvAndVolumes(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello, mode: v1}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {password: s3cret}
`)
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: env, labels: {pod: env, tier: back}, annotations: {note: hi}}
spec:%s
  hostAliases: [{ip: "10.1.2.3", hostnames: [db.internal]}]
  initContainers:
  - name: init
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo from-init > /work/init.txt"]
    volumeMounts: [{name: scratch, mountPath: /work}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "exec sleep 3600"]
    resources: {limits: {cpu: 500m, memory: 128Mi}}
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: COMBO, value: "$(GREETING)-$(POD_NAME)"}
    volumeMounts:
    - {name: scratch, mountPath: /work}
    - {name: cfgvol, mountPath: /etc/cfg}
    - {name: secvol, mountPath: /etc/sec}
    - {name: info, mountPath: /etc/info}
    - {name: proj, mountPath: /etc/proj}
    readinessProbe: {exec: {command: [test, -e, /work/init.txt]}, periodSeconds: 1}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: cfgvol, configMap: {name: cfg}}
  - {name: secvol, secret: {secretName: sec}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: name, fieldRef: {fieldPath: metadata.name}}]}
  - name: proj
    projected:
      sources:
      - configMap: {name: cfg, items: [{key: mode, path: mode.txt}]}
      - secret: {name: sec}
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	waitReady(t, ns, "pod=env", 1, 90*time.Second)
	env := kubectl(t, "-n", ns, "exec", "env", "--", "env")
	p, _ := e.kube.CoreV1().Pods(ns).Get(context.Background(), "env", metav1.GetOptions{})
	for _, want := range []string{"GREETING=hello", "PASSWORD=s3cret", "POD_NAME=env", "POD_NS=" + ns,
		"POD_IP=" + p.Status.PodIP, "MEM_MI=128", "COMBO=hello-env", "KUBERNETES_SERVICE_HOST="} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	files := kubectl(t, "-n", ns, "exec", "env", "--", "sh", "-c",
		"cat /work/init.txt /etc/cfg/greeting; echo; cat /etc/sec/password; echo; cat /etc/info/name; echo; cat /etc/info/labels; echo; cat /etc/proj/mode.txt /etc/proj/password; echo; grep db.internal /etc/hosts")
	for _, want := range []string{"from-init", "hello", "s3cret", "env", `tier="back"`, "v1s3cret", "10.1.2.3"} {
		if !strings.Contains(files, want) {
			t.Errorf("files lack %q:\n%s", want, files)
		}
	}

	// A ConfigMap change reaches the mounted files, plain and projected.
	kubectl(t, "-n", ns, "patch", "configmap", "cfg", "-p", `{"data":{"greeting":"bonjour","mode":"v2"}}`)
	var got string
	if err := poll(30*time.Second, func() (bool, error) {
		got, _ = e.kubectl(context.Background(), "", "-n", ns, "exec", "env", "--", "sh", "-c", "cat /etc/cfg/greeting /etc/proj/mode.txt")
		return strings.Contains(got, "bonjour") && strings.Contains(got, "v2"), nil
	}); err != nil {
		t.Errorf("configMap update not in the pod after 30s: %q", got)
	}
}

func TestInClusterClient(t *testing.T) {
	ns := namespace(t)
	// The default service account may read pods in its namespace.
	kubectl(t, "-n", ns, "create", "rolebinding", "view", "--clusterrole=view", "--serviceaccount="+ns+":default")
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: incluster}
spec:%s
  restartPolicy: Never
  containers:
  - name: c
    image: incluster
    imagePullPolicy: IfNotPresent
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	var p *corev1.Pod
	if err := poll(60*time.Second, func() (bool, error) {
		var err error
		p, err = e.kube.CoreV1().Pods(ns).Get(context.Background(), "incluster", metav1.GetOptions{})
		return err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed), nil
	}); err != nil {
		t.Fatalf("in-cluster pod did not finish: %+v", p.Status)
	}
	out := kubectl(t, "-n", ns, "logs", "incluster")
	if p.Status.Phase != corev1.PodSucceeded || !strings.Contains(out, "in-cluster ok: user=system:serviceaccount:"+ns+":default pods=1") {
		t.Fatalf("in-cluster client: phase %s, output %q", p.Status.Phase, out)
	}
	// The token is a bound, projected one (TokenRequest): its claims name
	// the pod.
	tok, err := e.kube.CoreV1().Pods(ns).Get(context.Background(), "incluster", metav1.GetOptions{})
	if err != nil || tok.Spec.Volumes == nil {
		t.Fatalf("pod volumes: %v", err)
	}
	found := false
	for _, v := range tok.Spec.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("no projected service-account token volume in the pod")
	}
}

// TestProjectedToken checks the token file itself: a JWT bound to the pod.
func TestProjectedToken(t *testing.T) {
	ns := namespace(t)
	runPod(t, ns, "tok", "", "exec sleep 3600")
	sa := "/var/run/secrets/kubernetes.io/serviceaccount"
	out := kubectl(t, "-n", ns, "exec", "tok", "--", "sh", "-c", "ls "+sa+"; cat "+sa+"/namespace; echo; head -c 27 "+sa+"/ca.crt")
	for _, want := range []string{"token", "ca.crt", ns, "-----BEGIN CERTIFICATE-----"} {
		if !strings.Contains(out, want) {
			t.Errorf("service account files lack %q:\n%s", want, out)
		}
	}
	tok := kubectl(t, "-n", ns, "exec", "tok", "--", "cat", sa+"/token")
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", tok)
	}
	claims, _ := decodeSegment(parts[1])
	if !bytes.Contains(claims, []byte(`"tok"`)) {
		t.Errorf("token claims do not name the pod: %s", claims)
	}
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
