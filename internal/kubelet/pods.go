package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
			force := pod.DeletionGracePeriodSeconds != nil && *pod.DeletionGracePeriodSeconds == 0
			if !g.Deleting || force {
				if err := k.deleteGroup(ctx, g, force); err != nil {
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
		return nil
	}

	if g == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil // finished; its group was deleted, nothing to run
		}
		return k.createGroup(ctx, pod)
	}
	if err := k.pushStatus(ctx, pod, g); err != nil {
		return err
	}
	if g.Status == api.StatusRunning && !g.Deleting {
		return k.updateVolumes(ctx, pod, g)
	}
	return nil
}

func (k *Kubelet) createGroup(ctx context.Context, pod *corev1.Pod) error {
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
	g, created, err := k.skiff.CreateGroup(ctx, *req)
	if err != nil {
		if code := client.StatusCode(err); code == http.StatusBadRequest || code == http.StatusUnprocessableEntity {
			return k.failPod(ctx, pod, reasonInvalid, err.Error())
		}
		return fmt.Errorf("create group for %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	k.groups.put(g)
	k.vols.recordCreate(pod, req)
	if created {
		k.log.Debug("group created", "pod", pod.Namespace+"/"+pod.Name, "group", g.ID)
	}
	return k.pushStatus(ctx, pod, g)
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
	_, err := k.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// waitingStatus shows a pod's containers Waiting with reason.
func (k *Kubelet) waitingStatus(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
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
	_, err := k.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// pushStatus writes the status group stands for, if it differs.
func (k *Kubelet) pushStatus(ctx context.Context, pod *corev1.Pod, g *api.Group) error {
	st := podStatus(pod, g, k.cfg.NodeIP, time.Now())
	if statusEqual(&st, &pod.Status) {
		return nil
	}
	p := pod.DeepCopy()
	p.Status = st
	_, err := k.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err // a conflict is retried with the informer's newer pod
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
