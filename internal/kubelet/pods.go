package kubelet

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// Event reasons this node records on pods.
const (
	reasonUnsupported  = "UnsupportedPodSpec"
	reasonInvalid      = "ProviderFailed"
	reasonConfigError  = "CreateContainerConfigError"
	reasonGroupCreated = "GroupCreated"
)

func (k *Kubelet) addHandlers() {
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = k.podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
		DeleteFunc: enqueue,
	})
	// A changed ConfigMap or Secret is written into the pods that mount it.
	onSource := func(obj any) {
		m, err := metaOf(obj)
		if err != nil {
			return
		}
		pods, err := k.pods.Pods(m.GetNamespace()).List(everything())
		if err != nil {
			return
		}
		for _, p := range pods {
			if refersTo(p, m.GetName()) {
				k.queue.Add(p.Namespace + "/" + p.Name)
			}
		}
	}
	h := cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, n any) { onSource(n) }, AddFunc: onSource, DeleteFunc: onSource}
	_, _ = k.cmInformer.AddEventHandler(h)
	_, _ = k.secInformer.AddEventHandler(h)
}

func (k *Kubelet) worker(ctx context.Context) {
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		err := k.sync(ctx, key)
		switch {
		case err == nil:
			k.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			k.log.Debug("sync pod; retrying", "pod", key, "err", err)
			k.queue.AddRateLimited(key)
		}
		k.queue.Done(key)
	}
}

// sync brings one pod and its group together: create, delete, or push the
// group's status to the pod. It is level-triggered: it reads the current
// pod from the informer and the current group from the watch cache.
func (k *Kubelet) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// The pod is gone from the apiserver: its groups are orphans.
		for _, g := range k.groups.forPod(key) {
			k.pushed.forget(types.UID(g.Labels[LabelUID]))
			if err := k.deleteGroup(ctx, g, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	uid := string(pod.UID)
	// A group of an earlier pod of the same name (StatefulSet, re-create).
	for _, g := range k.groups.forPod(key) {
		if g.Labels[LabelUID] != uid {
			if err := k.deleteGroup(ctx, g, false); err != nil {
				return err
			}
		}
	}
	g := k.groups.get(uid)

	if pod.DeletionTimestamp != nil {
		if g != nil {
			// The pod's deletion grace period (kubectl delete
			// --grace-period=N) is the group's, exactly; a later, shorter
			// one shortens it.
			grace := pod.DeletionGracePeriodSeconds
			cur := g.Spec.TerminationGracePeriodSeconds
			shorter := grace != nil && (cur == nil || *grace < *cur)
			if !g.Deleting || shorter {
				if err := k.deleteGroupGrace(ctx, g, grace); err != nil {
					return err
				}
			}
			return k.pushStatus(ctx, pod, g)
		}
		// The group is gone (or never was): finish the delete, for this
		// very pod only.
		err := k.kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr(int64(0)),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return err
		}
		k.vols.forget(uid)
		k.tokens.forget(uid)
		k.pushed.forget(pod.UID)
		return nil
	}

	if g == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil // finished; its group was deleted, nothing to run
		}
		return k.createGroup(ctx, pod)
	}
	if nothingToReport(k.pushed.current(pod), g) {
		return nil
	}
	if err := k.pushStatus(ctx, pod, g); err != nil {
		return err
	}
	if g.Status == api.StatusRunning && !g.Deleting {
		return k.updateVolumes(ctx, pod, g)
	}
	return nil
}

// createGroup submits the create of pod's group to the batcher and
// returns; the answer puts the group in the cache and enqueues the pod.
func (k *Kubelet) createGroup(ctx context.Context, pod *corev1.Pod) error {
	uid := string(pod.UID)
	if k.creating.has(uid) {
		return nil // submitted already; its answer enqueues the pod
	}
	req, err := k.tr.group(pod)
	if err != nil {
		if errors.Is(err, errUnsupported) {
			return k.failPod(ctx, pod, reasonUnsupported, err.Error())
		}
		// A missing ConfigMap, Secret or token: the kubelet's
		// CreateContainerConfigError, retried until the source appears.
		k.rec.Event(pod, corev1.EventTypeWarning, reasonConfigError, err.Error())
		if perr := k.waitingStatus(ctx, pod, reasonConfigError, err.Error()); perr != nil {
			return perr
		}
		return err
	}
	if !k.creating.start(uid) {
		return nil
	}
	key := pod.Namespace + "/" + pod.Name
	k.creates.submit(ctx, *req, func(g *api.Group, created bool, err error) {
		k.creating.done(uid)
		switch {
		case err == nil:
			k.groups.put(g)
			k.vols.recordCreate(pod, req)
			if created {
				k.log.Debug("group created", "pod", key, "group", g.ID)
			}
			k.queue.Add(key) // its status is pushed by the next sync
		case invalidCreate(err):
			if ferr := k.failPod(ctx, pod, reasonInvalid, err.Error()); ferr != nil {
				k.queue.AddRateLimited(key)
			}
		case ctx.Err() == nil:
			k.log.Debug("create group; retrying", "pod", key, "err", err)
			k.queue.AddRateLimited(key)
		}
	})
	return nil
}

// nothingToReport: skiff is still building the group (placing it, making
// its sandbox, starting its containers) and has no news a pod status
// would carry beyond Pending: no container that runs, ended, or waits for
// a reason of its own (an image pull, a back-off). The pod stays Pending
// as the apiserver made it until there is. In a burst this saves one or
// two status writes per pod while the apiserver is busiest; a pod's IP
// shows once its containers start.
func nothingToReport(pod *corev1.Pod, g *api.Group) bool {
	if g.Deleting || (g.Status != api.StatusPending && g.Status != api.StatusScheduling) {
		return false
	}
	if pod.Status.Phase != corev1.PodPending || len(pod.Status.ContainerStatuses) != 0 {
		return false
	}
	for _, cs := range append(append([]api.ContainerStatus{}, g.InitContainers...), g.Containers...) {
		switch {
		case cs.State != api.ContainerWaiting:
			return false
		case cs.Reason == "", cs.Reason == "Pending", cs.Reason == "ContainerCreating", cs.Reason == "PodInitializing":
		default:
			return false
		}
	}
	return true
}

// failPod ends a pod that skiff cannot run, with a status and an event that
// say why.
func (k *Kubelet) failPod(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
	k.rec.Event(pod, corev1.EventTypeWarning, reason, msg)
	p := pod.DeepCopy()
	now := mtime(time.Now())
	p.Status.Phase = corev1.PodFailed
	p.Status.Reason = reason
	p.Status.Message = msg
	if p.Status.StartTime == nil {
		p.Status.StartTime = &now
	}
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: reason, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: reason, Message: msg}},
		})
	}
	return k.writeStatus(ctx, pod, p.Status)
}

// waitingStatus shows a pod's containers Waiting with reason.
func (k *Kubelet) waitingStatus(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
	pod = k.pushed.current(pod)
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodPending
	p.Status.HostIP = k.cfg.NodeIP
	p.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}},
		})
	}
	if statusEqual(&p.Status, &pod.Status) {
		return nil
	}
	return k.writeStatus(ctx, pod, p.Status)
}

// pushStatus writes the status group stands for, if it differs.
func (k *Kubelet) pushStatus(ctx context.Context, pod *corev1.Pod, g *api.Group) error {
	pod = k.pushed.current(pod)
	st := podStatus(pod, g, k.cfg.NodeIP, time.Now())
	if statusEqual(&st, &pod.Status) {
		return nil
	}
	return k.writeStatus(ctx, pod, st)
}

// deleteGroup deletes g gracefully (or at once); a group already gone is
// fine.
func (k *Kubelet) deleteGroup(ctx context.Context, g *api.Group, force bool) error {
	_, err := k.skiff.DeleteGroup(ctx, g.ID, force)
	if client.IsNotFound(err) {
		k.groups.remove(g)
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete group %s: %w", g.ID, err)
	}
	return nil
}

// deleteGroupGrace deletes g with grace seconds (nil: the group's own).
func (k *Kubelet) deleteGroupGrace(ctx context.Context, g *api.Group, grace *int64) error {
	if grace == nil {
		return k.deleteGroup(ctx, g, false)
	}
	_, err := k.skiff.DeleteGroupGrace(ctx, g.ID, min(max(*grace, 0), api.MaxGracePeriod))
	if client.IsNotFound(err) {
		k.groups.remove(g)
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete group %s: %w", g.ID, err)
	}
	return nil
}

// podByUID finds a pod of this node by UID.
func (k *Kubelet) podByUID(uid types.UID) *corev1.Pod {
	for _, obj := range k.podInformer.GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok && p.UID == uid {
			return p
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
