package kubelet

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// Live updates of ConfigMap, Secret, downwardAPI and projected volumes.
//
// skiff's config-file volumes are written when the group starts. To follow
// changes (and token rotation) this node sends the volume's new files to
// skiff (PUT /v1/groups/{id}/volumes/{name}); the group's host swaps them
// in atomically, as the kubelet's atomic writer does (a new generation
// directory behind a ..data link), so a reader sees the old set or the new
// one, never a mix. No process runs in the group: it works for images
// without a shell and with read-only mounts and non-root users.

type appliedVolume struct {
	hash string
}

type volumeState struct {
	mu sync.Mutex
	m  map[string]map[string]appliedVolume // pod UID → volume → applied
}

func newVolumeState() *volumeState { return &volumeState{m: map[string]map[string]appliedVolume{}} }

func (s *volumeState) get(uid, vol string) (appliedVolume, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.m[uid][vol]
	return a, ok
}

func (s *volumeState) set(uid, vol string, a appliedVolume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[uid] == nil {
		s.m[uid] = map[string]appliedVolume{}
	}
	s.m[uid][vol] = a
}

func (s *volumeState) forget(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}

// recordCreate notes the files a group was created with.
func (s *volumeState) recordCreate(pod *corev1.Pod, req *api.CreateGroupRequest) {
	for _, v := range req.Spec.Volumes {
		if v.ConfigFile == nil {
			continue
		}
		s.set(string(pod.UID), v.Name, appliedVolume{hash: filesHash(v.ConfigFile.Items, v.ConfigFile.DefaultMode)})
	}
}

// updateVolumes sends skiff every file volume whose content changed since
// it was last written.
func (k *Kubelet) updateVolumes(ctx context.Context, pod *corev1.Pod, g *api.Group) error {
	uid := string(pod.UID)
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.ConfigMap == nil && v.Secret == nil && v.DownwardAPI == nil && v.Projected == nil {
			continue
		}
		files, mode, err := k.tr.volumeFiles(pod, v)
		if err != nil {
			// The source is gone: Kubernetes keeps the last files too.
			k.log.Debug("volume source", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name, "err", err)
			continue
		}
		hash := filesHash(files, mode)
		prev, known := k.vols.get(uid, v.Name)
		if known && prev.hash == hash {
			continue
		}
		_, err = k.skiff.UpdateVolume(ctx, g.ID, volName(v.Name), api.ConfigFileVolume{Items: files, DefaultMode: mode})
		if err != nil {
			if code := client.StatusCode(err); code == http.StatusBadRequest || code == http.StatusNotFound {
				// Never going to work as it is: say so once, do not loop.
				k.rec.Eventf(pod, corev1.EventTypeWarning, "VolumeUpdateFailed", "volume %s: %v", v.Name, err)
				k.vols.set(uid, v.Name, appliedVolume{hash: hash})
				continue
			}
			return fmt.Errorf("update volume %s of %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
		}
		k.vols.set(uid, v.Name, appliedVolume{hash: hash})
		if known {
			k.log.Info("volume updated", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name, "files", len(files))
		}
	}
	return nil
}
