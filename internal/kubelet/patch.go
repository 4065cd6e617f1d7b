package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// writeStatus sends pod the status st, as the kubelet's status manager
// does: a strategic-merge patch of the status subresource from the status
// this node last saw to st, with the pod's UID as precondition. A patch
// carries no resourceVersion, so it never fails on a conflict with a
// newer pod (an UpdateStatus from a stale informer copy would, and its
// retry back-off would then delay the pod by seconds in a burst).
// A pod already gone is not an error.
func (k *Kubelet) writeStatus(ctx context.Context, pod *corev1.Pod, st corev1.PodStatus) error {
	patch, err := statusPatch(k.pushed.current(pod), st)
	if err != nil {
		return err
	}
	out, err := k.kube.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if apierrors.IsConflict(err) {
		return nil // the UID changed: another pod of that name, synced on its own
	}
	if err == nil {
		k.pushed.record(out)
	}
	return err
}

// pushedStatuses remembers the status this node last wrote to each pod,
// with the resourceVersion the write made, until the informer's copy
// catches up. Without it a sync that runs before the informer has seen
// the previous write compares against a stale status and writes again:
// in a burst, hundreds of needless writes.
type pushedStatuses struct {
	mu sync.Mutex
	m  map[types.UID]pushedStatus
}

type pushedStatus struct {
	rv  uint64
	pod *corev1.Pod
}

func (p *pushedStatuses) record(pod *corev1.Pod) {
	rv, err := strconv.ParseUint(pod.ResourceVersion, 10, 64)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.UID]pushedStatus{}
	}
	if cur, ok := p.m[pod.UID]; !ok || cur.rv < rv {
		p.m[pod.UID] = pushedStatus{rv: rv, pod: pod}
	}
}

// current returns pod, or the newer copy this node's last write returned
// while the informer has not caught up with it.
func (p *pushedStatuses) current(pod *corev1.Pod) *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.m[pod.UID]
	if !ok {
		return pod
	}
	rv, err := strconv.ParseUint(pod.ResourceVersion, 10, 64)
	if err == nil && rv < cur.rv {
		return cur.pod
	}
	delete(p.m, pod.UID)
	return pod
}

func (p *pushedStatuses) forget(uid types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, uid)
}

// statusPatch is the strategic-merge patch that turns pod's status into
// st, with a UID precondition.
func statusPatch(pod *corev1.Pod, st corev1.PodStatus) ([]byte, error) {
	oldJSON, err := json.Marshal(corev1.Pod{Status: pod.Status})
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(corev1.Pod{Status: st})
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("status patch: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	m["metadata"] = map[string]any{"uid": string(pod.UID)}
	return json.Marshal(m)
}
