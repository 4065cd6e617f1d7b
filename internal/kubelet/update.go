package kubelet

import (
	"context"
	"encoding/base64"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffhq/skiff/api"
)

// Live updates of ConfigMap, Secret, downwardAPI and projected volumes.
//
// skiff's config-file volumes are written once, when the group starts. To
// follow changes (and token rotation) this node writes the new files into
// the running group through the exec API: a shell in a container that
// mounts the volume decodes each file to a temporary name and renames it
// over the old one, so a reader sees the old or the new file, never half.
// This needs sh, base64 and mv in the image (busybox has them) and a
// container user that may write the volume. A server-side "update volume"
// call would lift both limits (see the package README).

type appliedVolume struct {
	hash  string
	paths []string
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
		s.set(string(pod.UID), v.Name, appliedVolume{hash: filesHash(v.ConfigFile.Items, v.ConfigFile.DefaultMode), paths: itemPaths(v.ConfigFile.Items)})
	}
}

func itemPaths(items []api.ConfigFileItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Path
	}
	return out
}

// updateVolumes writes into the running group every file volume whose
// content changed since it was last written.
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
		ctr, mount := writerContainer(pod, g, v.Name)
		if ctr == "" {
			continue // no running container mounts it whole; nothing to update
		}
		script := writeScript(mount, files, mode, prev.paths)
		res, err := k.skiff.Exec(ctx, g.ID, api.ExecRequest{Container: ctr, Command: []string{"sh", "-s"}, Stdin: script, TimeoutSeconds: 30})
		if err != nil {
			return fmt.Errorf("update volume %s of %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
		}
		if res.ExitCode != 0 {
			k.rec.Eventf(pod, corev1.EventTypeWarning, "VolumeUpdateFailed", "volume %s: writing the new files in container %s failed (exit %d): %s", v.Name, ctr, res.ExitCode, strings.TrimSpace(res.Stderr))
			k.vols.set(uid, v.Name, appliedVolume{hash: hash, paths: prev.paths}) // do not retry in a loop
			continue
		}
		k.vols.set(uid, v.Name, appliedVolume{hash: hash, paths: itemPaths(files)})
		if known {
			k.log.Info("volume updated", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name, "files", len(files))
		}
	}
	return nil
}

// writerContainer picks a running container that mounts volume vol whole
// (not a subPath), and where.
func writerContainer(pod *corev1.Pod, g *api.Group, vol string) (string, string) {
	running := map[string]bool{}
	for _, cs := range g.Containers {
		if cs.State == api.ContainerRunning {
			running[cs.Name] = true
		}
	}
	for _, c := range pod.Spec.Containers {
		if !running[c.Name] {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == vol && m.SubPath == "" && m.SubPathExpr == "" {
				return c.Name, m.MountPath
			}
		}
	}
	return "", ""
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeScript is a POSIX shell script that replaces the volume's files at
// mount with files, each by rename, and removes the paths no longer there.
func writeScript(mount string, files []api.ConfigFileItem, defMode *int32, old []string) string {
	var b strings.Builder
	b.WriteString("set -e\ncd " + shQuote(mount) + "\n")
	keep := map[string]bool{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if p == "." || strings.HasPrefix(p, "../") || path.IsAbs(p) {
			continue
		}
		keep[p] = true
		mode := int32(0o644)
		if defMode != nil {
			mode = *defMode
		}
		if f.Mode != nil {
			mode = *f.Mode
		}
		tmp := p + ".skiff-tmp"
		if d := path.Dir(p); d != "." {
			b.WriteString("mkdir -p " + shQuote(d) + "\n")
		}
		fmt.Fprintf(&b, "printf '%%s' %s | base64 -d > %s\n", shQuote(base64.StdEncoding.EncodeToString([]byte(f.Content))), shQuote(tmp))
		fmt.Fprintf(&b, "chmod %o %s\nmv -f %s %s\n", mode&0o7777, shQuote(tmp), shQuote(tmp), shQuote(p))
	}
	sort.Strings(old)
	for _, p := range old {
		if !keep[path.Clean(p)] {
			b.WriteString("rm -f " + shQuote(path.Clean(p)) + "\n")
		}
	}
	return b.String()
}
