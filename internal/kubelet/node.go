package kubelet

import (
	"context"
	"fmt"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffhq/skiff/api"
)

type metav1ListOptions = metav1.ListOptions

// Taint every skiff virtual node carries: pods must tolerate it to land
// here, as with any virtual-kubelet provider.
var nodeTaint = corev1.Taint{Key: "virtual-kubelet.io/provider", Value: "skiff", Effect: corev1.TaintEffectNoSchedule}

const (
	leaseDuration  = 40 * time.Second
	leaseRenew     = 10 * time.Second
	statusInterval = time.Minute
)

// capacity is what the node offers: the sum over skiff's Ready hosts, with
// Config.Capacity's entries taking precedence.
func (k *Kubelet) capacity(ctx context.Context) corev1.ResourceList {
	rl := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("5000"),
	}
	if hosts, err := k.skiff.Hosts(ctx); err == nil {
		var mcpu, mem int64
		var groups int
		for _, h := range hosts {
			if h.State != api.HostReady {
				continue
			}
			mcpu += h.Capacity.MilliCPU
			mem += h.Capacity.Memory
			groups += h.Capacity.Groups
		}
		if mcpu > 0 {
			rl[corev1.ResourceCPU] = *resource.NewMilliQuantity(mcpu, resource.DecimalSI)
			rl[corev1.ResourceMemory] = *resource.NewQuantity(mem, resource.BinarySI)
		}
		if groups > 0 {
			rl[corev1.ResourcePods] = *resource.NewQuantity(int64(groups), resource.DecimalSI)
		}
	} else {
		k.log.Debug("hosts not readable; using default capacity", "err", err)
	}
	for n, q := range k.cfg.Capacity {
		rl[n] = q
	}
	return rl
}

func (k *Kubelet) nodeLabels() map[string]string {
	return map[string]string{
		"type":                             "virtual-kubelet",
		"kubernetes.io/role":               "agent",
		"kubernetes.io/hostname":           k.cfg.NodeName,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               runtime.GOARCH,
		"beta.kubernetes.io/os":            "linux",
		"beta.kubernetes.io/arch":          runtime.GOARCH,
		"node.kubernetes.io/instance-type": "skiff",
		"alpha.service-controller.kubernetes.io/exclude-balancer": "true",
	}
}

func (k *Kubelet) nodeStatus(ctx context.Context, old *corev1.NodeStatus) corev1.NodeStatus {
	now := metav1.Now()
	capa := k.capacity(ctx)
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		if old != nil {
			for _, oc := range old.Conditions {
				if oc.Type == t && oc.Status == s {
					c.LastTransitionTime = oc.LastTransitionTime
				}
			}
		}
		return c
	}
	ready, readyReason, readyMsg := corev1.ConditionTrue, "KubeletReady", "skiff virtual kubelet is ready"
	if _, err := k.skiff.ListGroups(ctx, clientListOne()); err != nil {
		ready, readyReason, readyMsg = corev1.ConditionFalse, "SkiffUnreachable", err.Error()
	}
	return corev1.NodeStatus{
		Capacity:    capa,
		Allocatable: capa,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeReady, ready, readyReason, readyMsg),
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
			cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", ""),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: k.cfg.NodeIP},
			{Type: corev1.NodeHostName, Address: k.cfg.NodeName},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.port())}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          k.cfg.KubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "skiff://1",
			OSImage:                 "skiff",
			KernelVersion:           "skiff",
		},
	}
}

// registerNode creates the Node, or takes over the one a previous run left,
// putting back its taint, labels and status.
func (k *Kubelet) registerNode(ctx context.Context) error {
	nodes := k.kube.CoreV1().Nodes()
	for attempt := 0; ; attempt++ {
		n, err := nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			n = &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Labels: k.nodeLabels()},
				Spec:       corev1.NodeSpec{Taints: []corev1.Taint{nodeTaint}},
			}
			n, err = nodes.Create(ctx, n, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("register node: %w", err)
			}
			if err != nil {
				continue
			}
		case err != nil:
			if attempt < 30 && ctx.Err() == nil {
				k.log.Warn("get node; retrying", "err", err)
				time.Sleep(time.Second)
				continue
			}
			return fmt.Errorf("register node: %w", err)
		default:
			changed := false
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			for lk, lv := range k.nodeLabels() {
				if n.Labels[lk] != lv {
					n.Labels[lk], changed = lv, true
				}
			}
			has := false
			for _, t := range n.Spec.Taints {
				if t.Key == nodeTaint.Key && t.Effect == nodeTaint.Effect {
					has = true
				}
			}
			if !has {
				n.Spec.Taints, changed = append(n.Spec.Taints, nodeTaint), true
			}
			if n.Spec.Unschedulable {
				// A restart is not a cordon: keep a cordon a person made.
			}
			if changed {
				if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
					if apierrors.IsConflict(err) {
						continue
					}
					return fmt.Errorf("update node: %w", err)
				}
			}
		}
		n.Status = k.nodeStatus(ctx, &n.Status)
		if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsConflict(err) {
				continue
			}
			return fmt.Errorf("node status: %w", err)
		}
		k.log.Info("node registered", "ip", k.cfg.NodeIP, "port", k.port())
		return k.renewLease(ctx, n)
	}
}

// heartbeat keeps the node Lease and NodeStatus fresh.
func (k *Kubelet) heartbeat(ctx context.Context) {
	lease := time.NewTicker(leaseRenew)
	status := time.NewTicker(statusInterval)
	defer lease.Stop()
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			n, err := k.kube.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
			if err == nil {
				err = k.renewLease(ctx, n)
			}
			if apierrors.IsNotFound(err) {
				// Someone deleted the node: register it again.
				err = k.registerNode(ctx)
			}
			if err != nil && ctx.Err() == nil {
				k.log.Warn("lease renewal", "err", err)
			}
		case <-status.C:
			if err := k.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				k.log.Warn("node status", "err", err)
			}
		}
	}
}

func (k *Kubelet) updateNodeStatus(ctx context.Context) error {
	for i := 0; i < 5; i++ {
		n, err := k.kube.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = k.nodeStatus(ctx, &n.Status)
		_, err = k.kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("node status: conflicts")
}

func (k *Kubelet) renewLease(ctx context.Context, node *corev1.Node) error {
	leases := k.kube.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	secs := int32(leaseDuration / time.Second)
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
	l, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: corev1.NamespaceNodeLease, OwnerReferences: owner},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &k.cfg.NodeName, LeaseDurationSeconds: &secs, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity = &k.cfg.NodeName
	l.Spec.LeaseDurationSeconds = &secs
	l.Spec.RenewTime = &now
	if len(l.OwnerReferences) == 0 || l.OwnerReferences[0].UID != node.UID {
		l.OwnerReferences = owner
	}
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
