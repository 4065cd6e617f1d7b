package kubelet

import (
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/skiffhq/skiff/api"
)

// TestStatusPatch: the patch carries the UID precondition and, applied to
// the old pod, gives the new status.
func TestStatusPatch(t *testing.T) {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1"},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: "example.com/gate", Status: corev1.ConditionTrue, LastTransitionTime: now},
		}}}
	st := *pod.Status.DeepCopy()
	st.Phase = corev1.PodRunning
	st.PodIP = "10.0.0.5"
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
	patch, err := statusPatch(pod, st)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		t.Fatal(err)
	}
	if md, _ := m["metadata"].(map[string]any); md["uid"] != "u-1" {
		t.Errorf("patch without the UID precondition: %s", patch)
	}
	oldJSON, _ := json.Marshal(pod)
	out, err := strategicpatch.StrategicMergePatch(oldJSON, patch, corev1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if !statusEqual(&got.Status, &st) {
		t.Errorf("patched status:\n%+v\nwant\n%+v", got.Status, st)
	}
}

func TestNothingToReport(t *testing.T) {
	pending := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}
	reported := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "c"}}}}
	waiting := func(reason string) []api.ContainerStatus {
		return []api.ContainerStatus{{Name: "c", State: api.ContainerWaiting, Reason: reason}}
	}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		g    api.Group
		want bool
	}{
		{"just accepted", pending, api.Group{Status: api.StatusScheduling, Containers: waiting("Pending")}, true},
		{"sandbox, creating", pending, api.Group{Status: api.StatusPending, IP: "10.0.0.1", Containers: waiting("ContainerCreating")}, true},
		{"pulling", pending, api.Group{Status: api.StatusPending, Containers: waiting("Pulling")}, false},
		{"back-off", pending, api.Group{Status: api.StatusPending, Containers: waiting("ImagePullBackOff")}, false},
		{"running", pending, api.Group{Status: api.StatusRunning}, false},
		{"schedule failed", pending, api.Group{Status: api.StatusScheduleFailed}, false},
		{"deleting", pending, api.Group{Status: api.StatusPending, Deleting: true}, false},
		{"pod has statuses", reported, api.Group{Status: api.StatusPending}, false},
	} {
		if got := nothingToReport(c.pod, &c.g); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
