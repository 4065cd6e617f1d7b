package kubelet

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

func everything() labels.Selector { return labels.Everything() }

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	return meta.Accessor(obj)
}

// refersTo reports whether pod uses a ConfigMap or Secret called name.
func refersTo(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name == name,
			v.Secret != nil && v.Secret.SecretName == name:
			return true
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if (s.ConfigMap != nil && s.ConfigMap.Name == name) || (s.Secret != nil && s.Secret.Name == name) {
					return true
				}
			}
		}
	}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, ef := range c.EnvFrom {
			if (ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == name) || (ef.SecretRef != nil && ef.SecretRef.Name == name) {
				return true
			}
		}
		for _, e := range c.Env {
			if vf := e.ValueFrom; vf != nil {
				if (vf.ConfigMapKeyRef != nil && vf.ConfigMapKeyRef.Name == name) || (vf.SecretKeyRef != nil && vf.SecretKeyRef.Name == name) {
					return true
				}
			}
		}
	}
	return false
}

// configMap reads from the informer, falling back to the apiserver for an
// object created an instant ago.
func (k *Kubelet) configMap(ns, name string) (*corev1.ConfigMap, error) {
	if cm, err := k.cms.ConfigMaps(ns).Get(name); err == nil {
		return cm, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return k.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (k *Kubelet) secret(ns, name string) (*corev1.Secret, error) {
	if s, err := k.secrets.Secrets(ns).Get(name); err == nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return k.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}

func (k *Kubelet) token(pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	return k.tokens.get(pod, src)
}

// tokenCache holds the bound service-account tokens of this node's pods,
// requested through the TokenRequest API and renewed at 80% of their life
// (or after 24 hours), as the kubelet does.
type tokenCache struct {
	kube kubernetes.Interface
	mu   sync.Mutex
	m    map[string]cachedToken
	now  func() time.Time
}

type cachedToken struct {
	token           string
	issued, expires time.Time
}

func newTokenCache(kube kubernetes.Interface) *tokenCache {
	return &tokenCache{kube: kube, m: map[string]cachedToken{}, now: time.Now}
}

func tokenKey(pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) string {
	exp := int64(3600)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	return fmt.Sprintf("%s|%s|%s|%d", pod.UID, pod.Spec.ServiceAccountName, src.Audience, exp)
}

func (c cachedToken) due(now time.Time) bool {
	life := c.expires.Sub(c.issued)
	return now.After(c.issued.Add(life*8/10)) || now.After(c.issued.Add(24*time.Hour))
}

func (tc *tokenCache) get(pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	key := tokenKey(pod, src)
	tc.mu.Lock()
	ct, ok := tc.m[key]
	tc.mu.Unlock()
	if ok && !ct.due(tc.now()) {
		return ct.token, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := tc.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		if ok && tc.now().Before(ct.expires) && !apierrors.IsNotFound(err) {
			return ct.token, nil // keep the old one while it is valid
		}
		return "", fmt.Errorf("service account token for %q: %w", sa, err)
	}
	ct = cachedToken{token: out.Status.Token, issued: tc.now(), expires: out.Status.ExpirationTimestamp.Time}
	tc.mu.Lock()
	tc.m[key] = ct
	tc.mu.Unlock()
	return ct.token, nil
}

// forget drops the tokens of a pod that is gone.
func (tc *tokenCache) forget(uid string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for k := range tc.m {
		if len(k) > len(uid) && k[:len(uid)] == uid && k[len(uid)] == '|' {
			delete(tc.m, k)
		}
	}
}
