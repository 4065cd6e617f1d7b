package kubelet

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffhq/skiff/api"
)

// volume translates one pod volume. ConfigMap, Secret, downwardAPI and
// projected volumes become skiff config-file volumes holding the files
// they project now; live changes are written in later (see updater).
func (t *translator) volume(pod *corev1.Pod, v *corev1.Volume) (api.Volume, error) {
	out := api.Volume{Name: volName(v.Name)}
	if v.EmptyDir != nil {
		ed := &api.EmptyDirVolume{Medium: string(v.EmptyDir.Medium)}
		if v.EmptyDir.SizeLimit != nil {
			ed.SizeLimit = api.Quantity(v.EmptyDir.SizeLimit.Value())
		}
		out.EmptyDir = ed
		return out, nil
	}
	if v.NFS != nil {
		out.NFS = &api.NFSVolume{Server: v.NFS.Server, Path: v.NFS.Path, ReadOnly: v.NFS.ReadOnly}
		return out, nil
	}
	files, mode, err := t.volumeFiles(pod, v)
	if err != nil {
		return out, err
	}
	out.ConfigFile = &api.ConfigFileVolume{Items: files, DefaultMode: mode}
	return out, nil
}

// volumeFiles returns the files a ConfigMap, Secret, downwardAPI or
// projected volume holds for pod right now, sorted by path.
func (t *translator) volumeFiles(pod *corev1.Pod, v *corev1.Volume) ([]api.ConfigFileItem, *int32, error) {
	var files []api.ConfigFileItem
	var defMode *int32
	var err error
	switch {
	case v.ConfigMap != nil:
		defMode = v.ConfigMap.DefaultMode
		files, err = t.configMapFiles(pod, &v.ConfigMap.LocalObjectReference, v.ConfigMap.Items, v.ConfigMap.Optional)
	case v.Secret != nil:
		defMode = v.Secret.DefaultMode
		files, err = t.secretFiles(pod, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional)
	case v.DownwardAPI != nil:
		defMode = v.DownwardAPI.DefaultMode
		files, err = t.downwardFiles(pod, v.DownwardAPI.Items)
	case v.Projected != nil:
		defMode = v.Projected.DefaultMode
		for _, ps := range v.Projected.Sources {
			var fs []api.ConfigFileItem
			switch {
			case ps.ConfigMap != nil:
				fs, err = t.configMapFiles(pod, &ps.ConfigMap.LocalObjectReference, ps.ConfigMap.Items, ps.ConfigMap.Optional)
			case ps.Secret != nil:
				fs, err = t.secretFiles(pod, ps.Secret.Name, ps.Secret.Items, ps.Secret.Optional)
			case ps.DownwardAPI != nil:
				fs, err = t.downwardFiles(pod, ps.DownwardAPI.Items)
			case ps.ServiceAccountToken != nil:
				var tok string
				tok, err = t.src.token(pod, ps.ServiceAccountToken)
				fs = []api.ConfigFileItem{{Path: ps.ServiceAccountToken.Path, Content: tok}}
			}
			if err != nil {
				break
			}
			files = append(files, fs...)
		}
	default:
		return nil, nil, fmt.Errorf("volume %q: not a file-projecting volume", v.Name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if defMode == nil {
		m := int32(0o644)
		defMode = &m
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, defMode, nil
}

func (t *translator) configMapFiles(pod *corev1.Pod, ref *corev1.LocalObjectReference, items []corev1.KeyToPath, opt *bool) ([]api.ConfigFileItem, error) {
	cm, err := t.src.configMap(pod.Namespace, ref.Name)
	if err != nil {
		if optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("configMap %q: %w", ref.Name, err)
	}
	data := map[string]string{}
	for k, v := range cm.Data {
		data[k] = v
	}
	for k, v := range cm.BinaryData {
		data[k] = string(v)
	}
	return keyFiles(data, items, opt, "configMap "+ref.Name)
}

func (t *translator) secretFiles(pod *corev1.Pod, name string, items []corev1.KeyToPath, opt *bool) ([]api.ConfigFileItem, error) {
	sec, err := t.src.secret(pod.Namespace, name)
	if err != nil {
		if optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	data := map[string]string{}
	for k, v := range sec.Data {
		data[k] = string(v)
	}
	for k, v := range sec.StringData {
		data[k] = v
	}
	return keyFiles(data, items, opt, "secret "+name)
}

// keyFiles lays out keys as files: every key, or just items.
func keyFiles(data map[string]string, items []corev1.KeyToPath, opt *bool, what string) ([]api.ConfigFileItem, error) {
	var out []api.ConfigFileItem
	if len(items) == 0 {
		for k, v := range data {
			out = append(out, api.ConfigFileItem{Path: k, Content: v})
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional(opt) {
				continue
			}
			return nil, fmt.Errorf("%s has no key %q", what, it.Key)
		}
		out = append(out, api.ConfigFileItem{Path: path.Clean(it.Path), Content: v, Mode: it.Mode})
	}
	return out, nil
}

func (t *translator) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) ([]api.ConfigFileItem, error) {
	var out []api.ConfigFileItem
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, t.node, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := &corev1.Container{}
			if len(pod.Spec.Containers) > 0 {
				c = &pod.Spec.Containers[0]
			}
			v, err = resourceValue(pod, c, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, api.ConfigFileItem{Path: path.Clean(it.Path), Content: v, Mode: it.Mode})
	}
	return out, nil
}

// pullSecrets turns the pod's imagePullSecrets (dockerconfigjson or
// dockercfg) into skiff registry credentials. A missing secret is skipped,
// as the kubelet does: the pull may still work without it.
func (t *translator) pullSecrets(pod *corev1.Pod) ([]api.ImageRegistryCredential, error) {
	var out []api.ImageRegistryCredential
	for _, ref := range pod.Spec.ImagePullSecrets {
		sec, err := t.src.secret(pod.Namespace, ref.Name)
		if err != nil {
			continue
		}
		type authEntry struct {
			Username string `json:"username"`
			Password string `json:"password"`
			Auth     string `json:"auth"`
		}
		var auths map[string]authEntry
		if b, ok := sec.Data[corev1.DockerConfigJsonKey]; ok {
			var cfg struct {
				Auths map[string]authEntry `json:"auths"`
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				return nil, fmt.Errorf("imagePullSecret %q: %w", ref.Name, err)
			}
			auths = cfg.Auths
		} else if b, ok := sec.Data[corev1.DockerConfigKey]; ok {
			if err := json.Unmarshal(b, &auths); err != nil {
				return nil, fmt.Errorf("imagePullSecret %q: %w", ref.Name, err)
			}
		}
		servers := make([]string, 0, len(auths))
		for s := range auths {
			servers = append(servers, s)
		}
		sort.Strings(servers)
		for _, s := range servers {
			a := auths[s]
			user, pass := a.Username, a.Password
			if user == "" && a.Auth != "" {
				if dec, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
					user, pass, _ = strings.Cut(string(dec), ":")
				}
			}
			server := strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
			server = strings.TrimSuffix(strings.SplitN(server, "/", 2)[0], "/")
			if server == "index.docker.io" {
				server = "docker.io"
			}
			out = append(out, api.ImageRegistryCredential{Server: server, UserName: user, Password: pass})
		}
	}
	return out, nil
}

// filesHash identifies a volume's content, to tell when it changed.
func filesHash(files []api.ConfigFileItem, mode *int32) string {
	h := sha256.New()
	for _, f := range files {
		m := int32(-1)
		if f.Mode != nil {
			m = *f.Mode
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s\x00", f.Path, m, len(f.Content), f.Content)
	}
	if mode != nil {
		fmt.Fprintf(h, "mode=%d", *mode)
	}
	return hex.EncodeToString(h.Sum(nil))
}
