package kubelet

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffhq/skiff/api"
)

// podStatus computes the pod status that group stands for, keeping the
// transition times of conditions that did not change.
func podStatus(pod *corev1.Pod, g *api.Group, hostIP string, now time.Time) corev1.PodStatus {
	old := pod.Status
	st := corev1.PodStatus{
		HostIP:   hostIP,
		QOSClass: old.QOSClass,
	}
	if hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	if g.IP != "" {
		st.PodIP = g.IP
		st.PodIPs = []corev1.PodIP{{IP: g.IP}}
	}
	start := old.StartTime
	if start == nil {
		t := mtime(g.CreatedAt)
		start = &t
	}
	st.StartTime = start

	switch g.Status {
	case api.StatusRunning, api.StatusRestarting, api.StatusUpdating:
		st.Phase = corev1.PodRunning
	case api.StatusSucceeded:
		st.Phase = corev1.PodSucceeded
	case api.StatusFailed, api.StatusExpired:
		st.Phase = corev1.PodFailed
	case api.StatusTerminating:
		st.Phase = old.Phase
		if st.Phase == "" || st.Phase == corev1.PodPending {
			st.Phase = corev1.PodPending
		}
	default: // Pending, Scheduling, ScheduleFailed
		st.Phase = corev1.PodPending
	}
	if st.Phase == corev1.PodFailed || g.Status == api.StatusScheduleFailed {
		st.Reason, st.Message = g.Reason, g.Message
		if g.Status == api.StatusExpired && st.Reason == "" {
			st.Reason = "DeadlineExceeded"
		}
	}

	st.InitContainerStatuses = containerStatuses(pod.Spec.InitContainers, g.InitContainers, g, true)
	st.ContainerStatuses = containerStatuses(pod.Spec.Containers, g.Containers, g, false)

	initDone := true
	for _, cs := range st.InitContainerStatuses {
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			initDone = false
		}
	}
	if len(pod.Spec.InitContainers) == 0 || st.Phase == corev1.PodRunning || st.Phase == corev1.PodSucceeded {
		initDone = true
	}
	ready := st.Phase == corev1.PodRunning && len(st.ContainerStatuses) > 0
	for _, cs := range st.ContainerStatuses {
		if !cs.Ready {
			ready = false
		}
	}
	sandboxReady := g.IP != "" && !g.Status.Terminal()

	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: mtime(now)}
		for _, oc := range old.Conditions {
			if oc.Type == t && oc.Status == s {
				c.LastTransitionTime = oc.LastTransitionTime
			}
		}
		return c
	}
	notReady := "ContainersNotReady"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		notReady = "PodCompleted"
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, sandboxReady, ""),
		cond(corev1.PodInitialized, initDone, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, ready, notReady),
		cond(corev1.PodReady, ready, notReady),
		cond(corev1.PodScheduled, true, ""),
	}
	// Keep conditions that others (readiness gates, disruption) own.
	for _, oc := range old.Conditions {
		switch oc.Type {
		case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled:
		default:
			st.Conditions = append(st.Conditions, oc)
		}
	}
	return st
}

// containerStatuses lists the statuses of specs in spec order, from what
// the group reports.
func containerStatuses(specs []corev1.Container, got []api.ContainerStatus, g *api.Group, init bool) []corev1.ContainerStatus {
	if len(specs) == 0 {
		return nil
	}
	by := map[string]*api.ContainerStatus{}
	for i := range got {
		by[got[i].Name] = &got[i]
	}
	out := make([]corev1.ContainerStatus, 0, len(specs))
	for _, sp := range specs {
		cs := corev1.ContainerStatus{Name: sp.Name, Image: sp.Image}
		s := by[sp.Name]
		if s == nil {
			reason := "ContainerCreating"
			if init {
				reason = "PodInitializing"
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
			if g.Status == api.StatusScheduleFailed {
				cs.State.Waiting.Message = g.Message
			}
			out = append(out, cs)
			continue
		}
		if s.ImageID != "" {
			cs.ImageID = s.ImageID
		}
		cs.ContainerID = "skiff://" + g.ID + "/" + sp.Name
		cs.RestartCount = int32(s.RestartCount)
		cs.Ready = s.Ready && s.State == api.ContainerRunning
		cs.State = containerState(s)
		started := s.State == api.ContainerRunning
		cs.Started = &started
		if s.LastState != nil {
			cs.LastTerminationState = containerState(s.LastState)
		}
		out = append(out, cs)
	}
	return out
}

func containerState(s *api.ContainerStatus) corev1.ContainerState {
	var st corev1.ContainerState
	switch s.State {
	case api.ContainerRunning:
		r := &corev1.ContainerStateRunning{}
		if s.StartedAt != nil {
			r.StartedAt = mtime(*s.StartedAt)
		}
		st.Running = r
	case api.ContainerTerminated:
		t := &corev1.ContainerStateTerminated{Reason: s.Reason, Message: s.Message, Signal: int32(s.Signal)}
		if s.ExitCode != nil {
			t.ExitCode = int32(*s.ExitCode)
		}
		if t.Reason == "" {
			t.Reason = "Completed"
			if t.ExitCode != 0 {
				t.Reason = "Error"
			}
		}
		if s.StartedAt != nil {
			t.StartedAt = mtime(*s.StartedAt)
		}
		if s.FinishedAt != nil {
			t.FinishedAt = mtime(*s.FinishedAt)
		}
		st.Terminated = t
	default:
		reason := s.Reason
		if reason == "" {
			reason = "ContainerCreating"
		}
		st.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: s.Message}
	}
	return st
}

// statusEqual reports whether two statuses differ only in nothing that
// matters (times are compared to the second, as the API stores them).
func statusEqual(a, b *corev1.PodStatus) bool {
	return apiequality.Semantic.DeepEqual(a, b)
}

// mtime is t as the API will store it: to the second.
func mtime(t time.Time) metav1.Time { return metav1.NewTime(t.Truncate(time.Second)) }
